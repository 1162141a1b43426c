"""The package's layers (ARCHITECTURE.md), checked on its import graph: every import the source holds,
at module level or inside a function, read with ast (nothing imported, so nothing can hide an arrow)."""
import ast
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "ldlm"

# The layers, lowest first: a module may import its own layer and those below, never one above. The
# names are subpackages of ldlm, or modules at its top; `ldlm` itself (ldlm.load) sits above them all.
LAYERS = [
    {"nets"},                                                   # networks and diffusion math: torch only
    {"version", "config", "config_help", "io", "checksum"},     # what every layer reads
    {"runtime"},                                                # devices, precision, threads, checkpoints, run folders
    {"text"},                                                   # datasets, tokenizers, the frozen LM
    {"kinds"},                                                  # the model kinds behind one protocol
    {"sampling"},
    {"training"},
    {"evaluation"},                                             # metrics, judges, result rows, tables, figures
    {"trained"},                                                # load, sample from the shell, save and share
    {"experiments"},                                            # the experiment spec and the notebooks' pipeline
    {"tools"},
]
MAX_TOP_MODULES = 12


def modules() -> dict[str, Path]:
    """Dotted name -> file of every module of the package (a package by its __init__.py)."""
    found = {}
    for path in sorted(PACKAGE.rglob("*.py")):
        parts = list(path.relative_to(PACKAGE.parent).with_suffix("").parts)
        if parts[-1] == "__init__":
            parts.pop()
        found[".".join(parts)] = path
    return found


def imports(name: str, path: Path, known: set[str]) -> list[tuple[str, int]]:
    """(imported module of the package, line) for every import in `path`, wherever it stands."""
    is_package = path.name == "__init__.py"
    found = []
    for node in ast.walk(ast.parse(path.read_text(), str(path))):
        if isinstance(node, ast.Import):
            targets = [a.name for a in node.names]
        elif isinstance(node, ast.ImportFrom):
            if node.level:
                base = name.split(".")[: len(name.split(".")) - node.level + is_package]
                base = ".".join(base + ([node.module] if node.module else []))
            else:
                base = node.module
            targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in known else base for a in node.names]
        else:
            continue
        for target in targets:
            while target not in known and "." in target:  # ldlm.x.attribute -> ldlm.x
                target = target.rpartition(".")[0]
            if target in known and target != name:
                found.append((target, node.lineno))
    return found


def graph() -> dict[str, list[tuple[str, int]]]:
    known = modules()
    return {name: imports(name, path, set(known)) for name, path in known.items()}


def layer(name: str) -> int | None:
    """The layer of module `name`; `ldlm` itself is above every layer; None: in no layer."""
    if name == "ldlm":
        return len(LAYERS)
    top = name.split(".")[1]
    return next((i for i, names in enumerate(LAYERS) if top in names), None)


def circles(edges: dict[str, list[tuple[str, int]]]) -> list[list[str]]:
    """The strongly connected components of more than one module (Tarjan), each one circle or more."""
    index, low, stack, on_stack, found = {}, {}, [], set(), []

    def visit(v):
        index[v] = low[v] = len(index)
        stack.append(v)
        on_stack.add(v)
        for w, _ in edges[v]:
            if w not in index:
                visit(w)
                low[v] = min(low[v], low[w])
            elif w in on_stack:
                low[v] = min(low[v], index[w])
        if low[v] == index[v]:
            component = []
            while True:
                w = stack.pop()
                on_stack.discard(w)
                component.append(w)
                if w == v:
                    break
            if len(component) > 1:
                found.append(sorted(component))

    for v in edges:
        if v not in index:
            visit(v)
    return found


def test_every_module_belongs_to_a_layer():
    assert [name for name in modules() if layer(name) is None] == []


def test_the_package_has_no_import_circle():
    assert circles(graph()) == []


def test_no_import_runs_from_a_lower_layer_up_to_a_higher_one():
    edges = graph()
    upward = [f"{a}:{line} imports {b}" for a, targets in edges.items() for b, line in targets
              if layer(a) is not None and layer(b) is not None and layer(b) > layer(a)]
    assert upward == []


def test_at_most_twelve_modules_stay_at_the_top_of_the_package():
    top = sorted(p.name for p in PACKAGE.glob("*.py"))
    assert len(top) <= MAX_TOP_MODULES, top


def test_the_networks_and_diffusion_math_need_only_torch_numpy_and_scipy():
    third_party = set()
    for path in (PACKAGE / "nets").glob("*.py"):
        for node in ast.walk(ast.parse(path.read_text())):
            if isinstance(node, ast.Import):
                third_party |= {a.name.split(".")[0] for a in node.names}
            elif isinstance(node, ast.ImportFrom) and not node.level:
                third_party.add(node.module.split(".")[0])
    assert third_party - set(sys.stdlib_module_names) == {"torch", "numpy", "scipy"}


def test_the_checks_see_a_circle_and_an_upward_import_when_there_is_one():
    edges = {"ldlm.nets.a": [("ldlm.kinds.b", 3)], "ldlm.kinds.b": [("ldlm.nets.a", 5)]}
    assert circles(edges) == [["ldlm.kinds.b", "ldlm.nets.a"]]
    assert layer("ldlm.kinds.b") > layer("ldlm.nets.a")



# The most parameters a function may take (self/cls not counted; *args and **kwargs count one each).
MAX_PARAMS = 8
# Signatures another library fixes, so they may take more.
PARAM_EXEMPTIONS = {
    "ldlm.trained.hub:SavedModelMixin._from_pretrained",  # huggingface_hub's ModelHubMixin hook, called with its kwargs
}


def parameter_count(fn: ast.FunctionDef | ast.AsyncFunctionDef, method: bool) -> int:
    a = fn.args
    named = [p.arg for p in a.posonlyargs + a.args + a.kwonlyargs]
    if method and named and named[0] in ("self", "cls"):
        named = named[1:]
    return len(named) + (a.vararg is not None) + (a.kwarg is not None)


def parameter_counts() -> dict[str, int]:
    """`module:Class.function` -> parameter count, for every function of the package (nested ones too)."""
    counts = {}

    def visit(node, module: str, prefix: str, in_class: bool):
        for child in ast.iter_child_nodes(node):
            if isinstance(child, (ast.FunctionDef, ast.AsyncFunctionDef)):
                counts[f"{module}:{prefix}{child.name}"] = parameter_count(child, in_class)
                visit(child, module, f"{prefix}{child.name}.", False)
            elif isinstance(child, ast.ClassDef):
                visit(child, module, f"{prefix}{child.name}.", True)
            else:
                visit(child, module, prefix, in_class)

    for name, path in modules().items():
        visit(ast.parse(path.read_text(), str(path)), name, "", False)
    return counts


def test_no_function_takes_more_than_eight_parameters():
    over = {name for name, count in parameter_counts().items() if count > MAX_PARAMS}
    assert sorted(over - PARAM_EXEMPTIONS) == []
    assert PARAM_EXEMPTIONS <= over  # an exemption that is no longer needed leaves the list


def test_the_parameter_count_skips_self_and_counts_args_and_kwargs_once():
    tree = ast.parse("class A:\n def f(self, a, b=1, *c, d, **e): pass\ndef g(self, a): pass")
    method, function = tree.body[0].body[0], tree.body[1]
    assert parameter_count(method, method=True) == 5
    assert parameter_count(function, method=False) == 2
