"""Layer 7: metrics and judges, diagnostics, tidy result rows, tables and figures."""
