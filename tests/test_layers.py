"""The package's layers: data -> models -> (losses, metrics, state, steps) -> methods -> trainer ->
entry points. Every `import` of a jaxcd module, function-level ones included, read from the
source with `ast`, must point to the same layer or a lower one, and the module graph must have
no cycle. `python tests/test_layers.py` prints the layers and the graph's edge count."""
import ast
import sys
from pathlib import Path

PACKAGE = Path(__file__).resolve().parents[1] / "jaxcd"

# Lowest first. A module's layer is the first rule whose prefix matches its dotted name.
LAYERS = (
    ("foundation", ("jaxcd.errors", "jaxcd.storage", "jaxcd.parallel", "jaxcd.writers")),
    ("data", ("jaxcd.data", "jaxcd.config_base")),  # configs declare their source's options
    ("models", ("jaxcd.models", "jaxcd.weights")),
    ("losses, metrics, state, steps", ("jaxcd.losses", "jaxcd.metrics", "jaxcd.clustering",
                                       "jaxcd.optim", "jaxcd.state", "jaxcd.steps", "jaxcd.sliding",
                                       "jaxcd.checkpointing")),
    ("methods", ("jaxcd.methods",)),
    ("trainer", ("jaxcd.trainer", "jaxcd.aot")),  # aot: the trainer's step, compiled for TPUs
    ("entry points", ("jaxcd.cli", "jaxcd.train", "jaxcd.evaluate", "jaxcd.predict",
                      "jaxcd.bench", "jaxcd.convert", "jaxcd.experiments")),
)


def module_name(path: Path) -> str:
  rel = path.relative_to(PACKAGE.parent).with_suffix("")
  parts = list(rel.parts)
  return ".".join(parts)


def layer_of(name: str) -> int:
  if name == "jaxcd":
    return 0  # the package's __init__: a docstring and a version
  for i, (_, prefixes) in enumerate(LAYERS):
    if any(name == p or name.startswith(p + ".") for p in prefixes):
      return i
  raise AssertionError(f"{name} is in no layer: add it to LAYERS in {__file__}")


def imports_of(path: Path, modules: set[str]) -> set[str]:
  """jaxcd modules imported anywhere in the file (module level and inside functions)."""
  name = module_name(path)
  package = name if path.name == "__init__.py" else name.rsplit(".", 1)[0]
  out = set()
  for node in ast.walk(ast.parse(path.read_text(), str(path))):
    if isinstance(node, ast.Import):
      targets = [a.name for a in node.names]
    elif isinstance(node, ast.ImportFrom):
      base = node.module or ""
      if node.level:
        base = ".".join(package.split(".")[:len(package.split(".")) - node.level + 1] +
                        ([base] if base else []))
      # `from jaxcd import x` imports the module jaxcd.x when there is one.
      targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in modules else base
                 for a in node.names]
    else:
      continue
    for t in targets:
      while t and t not in modules:  # a name inside a module -> that module
        t = t.rpartition(".")[0]
      if t and t != name:
        out.add(t)
  return out


def graph() -> dict[str, set[str]]:
  files = sorted(PACKAGE.rglob("*.py"))
  modules = {module_name(p).removesuffix(".__init__") for p in files}
  modules |= {module_name(p) for p in files}
  g = {}
  for p in files:
    name = module_name(p).removesuffix(".__init__")
    g[name] = {t.removesuffix(".__init__") for t in imports_of(p, modules)} - {name}
  return g


def cycles(g: dict[str, set[str]]) -> list[list[str]]:
  """Every cycle found by a depth-first search (one per back edge)."""
  found, state, stack = [], {}, []

  def visit(u):
    state[u] = 1
    stack.append(u)
    for v in sorted(g.get(u, ())):
      if state.get(v) == 1:
        found.append(stack[stack.index(v):] + [v])
      elif v not in state:
        visit(v)
    stack.pop()
    state[u] = 2

  for u in sorted(g):
    if u not in state:
      visit(u)
  return found


def upward_imports(g: dict[str, set[str]]) -> list[str]:
  bad = []
  for u, vs in sorted(g.items()):
    for v in sorted(vs):
      if v == "jaxcd":
        continue
      if layer_of(v) > layer_of(u):
        bad.append(f"{u} ({LAYERS[layer_of(u)][0]}) imports {v} ({LAYERS[layer_of(v)][0]})")
  return bad


def test_no_import_cycle():
  assert cycles(graph()) == []


def test_imports_point_down_the_layers():
  assert upward_imports(graph()) == []


def test_no_module_reads_configs_by_path_or_flags_below_the_entry_points():
  for p in sorted(PACKAGE.rglob("*.py")):
    name = module_name(p)
    if layer_of(name.removesuffix(".__init__")) >= len(LAYERS) - 1:
      continue
    text = p.read_text()
    assert '"configs"' not in text and "'configs'" not in text, f"{name} reads configs/ by path"
    assert "flags.FLAGS" not in text or name == "jaxcd.parallel", f"{name} reads absl flags"


if __name__ == "__main__":
  g = graph()
  for i, (label, _) in enumerate(LAYERS):
    print(f"{i} {label}: {', '.join(sorted(m for m in g if layer_of(m) == i))}")
  print(f"{len(g)} modules, {sum(map(len, g.values()))} import edges (function-level included)")
  print("cycles:", cycles(g) or "none")
  print("upward imports:", upward_imports(g) or "none")
  sys.exit(1 if cycles(g) or upward_imports(g) else 0)
