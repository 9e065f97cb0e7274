"""The extension's build and description files agree with each other and with the tree, the
.ui files match the Python that uses them, and the layers import only what they may."""
import ast
import json
import re
import xml.etree.ElementTree as ET
from pathlib import Path

import pytest
from PIL import Image

ROOT = Path(__file__).resolve().parents[1]
MODULES = ("SMILESynthesis", "SMILETrainer")


def cmake_sets(path: Path) -> dict[str, list[str]]:
    """`set(NAME values...)` blocks of a CMakeLists.txt, values split on whitespace or quoted."""
    text = re.sub(r"#[^\n]*", "", path.read_text())
    out = {}
    for start in re.finditer(r"\bset\(\s*(\w+)", text):
        tokens = re.compile(r'\s*(?:"([^"]*)"|([^\s")]+)|(\)))')
        pos, values = start.end(), []
        while (m := tokens.match(text, pos)) and not m[3]:
            values.append(m[1] if m[1] is not None else m[2])
            pos = m.end()
        out[start[1]] = values
    return out


def s4ext() -> dict[str, str]:
    fields = {}
    for line in (ROOT / "SMILE.s4ext").read_text().splitlines():
        if line.strip() and not line.startswith("#"):
            key, _, value = line.partition(" ")
            fields[key] = value.strip()
    return fields


def test_top_level_cmake_names_existing_files_and_every_engine_file():
    text = (ROOT / "CMakeLists.txt").read_text()
    assert re.search(r"project\(SMILE\)", text)
    for needed in ("find_package(Slicer REQUIRED)", "include(${Slicer_USE_FILE})",
                   "include(${Slicer_EXTENSION_GENERATE_CONFIG})", "include(${Slicer_EXTENSION_CPACK})"):
        assert needed in text
    assert re.findall(r"add_subdirectory\((\w+)\)", text) == list(MODULES)
    sets = cmake_sets(ROOT / "CMakeLists.txt")
    listed = sets["SMILECORE_PYTHON_FILES"] + sets["SMILECORE_RESOURCES"]
    for f in listed:
        assert (ROOT / f).is_file(), f"CMakeLists.txt names missing file {f}"
    on_disk = {str(p.relative_to(ROOT)) for p in (ROOT / "smilecore").rglob("*.py")}
    assert on_disk == set(sets["SMILECORE_PYTHON_FILES"]), "engine .py files and CMake disagree"
    resources = {str(p.relative_to(ROOT)) for p in (ROOT / "smilecore" / "resources").rglob("*") if p.is_file()}
    assert resources == set(sets["SMILECORE_RESOURCES"])
    # the engine is copied beside the modules in the build tree (ctest, build-tree launcher) and installed there
    call = re.search(r"ctkMacroCompilePythonScript\((.*?)\)", re.sub(r"#[^\n]*", "", text), re.S)
    assert call, "the engine is not copied into the build tree"
    args = call[1].split()
    for key, value in (("SCRIPTS", '"${SMILECORE_PYTHON_FILES}"'), ("RESOURCES", '"${SMILECORE_RESOURCES}"'),
                       ("DESTINATION_DIR", "${CMAKE_BINARY_DIR}/${Slicer_QTSCRIPTEDMODULES_LIB_DIR}"),
                       ("INSTALL_DIR", "${Slicer_INSTALL_QTSCRIPTEDMODULES_LIB_DIR}")):
        assert args[args.index(key) + 1] == value, key
    assert "NO_INSTALL_SUBDIR" in args  # else the files would land in a SMILEcore/ subfolder, off sys.path
    for key in ("EXTENSION_HOMEPAGE", "EXTENSION_CATEGORY", "EXTENSION_CONTRIBUTORS", "EXTENSION_DESCRIPTION",
                "EXTENSION_ICONURL", "EXTENSION_SCREENSHOTURLS", "EXTENSION_DEPENDS"):
        assert sets.get(key), key


@pytest.mark.parametrize("module", MODULES)
def test_module_cmake_lists_every_script_and_resource(module):
    folder = ROOT / module
    sets = cmake_sets(folder / "CMakeLists.txt")
    assert sets["MODULE_NAME"] == [module]
    scripts = [s.replace("${MODULE_NAME}", module) for s in sets["MODULE_PYTHON_SCRIPTS"]]
    resources = [s.replace("${MODULE_NAME}", module) for s in sets["MODULE_PYTHON_RESOURCES"]]
    for f in scripts + resources:
        assert (folder / f).is_file(), f"{module}/CMakeLists.txt names missing file {f}"
    on_disk = {str(p.relative_to(folder)) for p in folder.rglob("*.py")}
    assert on_disk == set(scripts), f"{module}: python files and CMake disagree"
    on_disk = {str(p.relative_to(folder)) for p in (folder / "Resources").rglob("*") if p.is_file()}
    assert on_disk == set(resources)
    text = (folder / "CMakeLists.txt").read_text()
    assert "slicerMacroBuildScriptedModule(" in text and "slicer_add_python_unittest(SCRIPT ${MODULE_NAME}.py)" in text
    assert f"class {module}Test(ScriptedLoadableModuleTest)" in (folder / f"{module}.py").read_text()
    with Image.open(folder / "Resources" / "Icons" / f"{module}.png") as icon:
        assert icon.size == (128, 128)


def test_description_files_agree_with_cmake():
    sets = cmake_sets(ROOT / "CMakeLists.txt")
    s4 = s4ext()
    for key in ("scm", "scmurl", "scmrevision", "depends", "build_subdirectory", "homepage", "contributors",
                "category", "iconurl", "status", "description", "screenshoturls", "enabled"):
        assert s4.get(key), f"SMILE.s4ext lacks {key}"
    assert s4["depends"].split() == sets["EXTENSION_DEPENDS"]
    assert s4["category"] == sets["EXTENSION_CATEGORY"][0]
    assert s4["homepage"] == sets["EXTENSION_HOMEPAGE"][0]
    assert s4["iconurl"] == sets["EXTENSION_ICONURL"][0]
    assert s4["description"] == sets["EXTENSION_DESCRIPTION"][0]
    assert s4["screenshoturls"].split() == sets["EXTENSION_SCREENSHOTURLS"]
    # the index fetches these: each must name a file of this repository, in the icon's raw form
    raw = sets["EXTENSION_ICONURL"][0].split("/SMILESynthesis/")[0] + "/"
    for url in sets["EXTENSION_SCREENSHOTURLS"] + sets["EXTENSION_ICONURL"]:
        assert url.startswith(raw) and (ROOT / url[len(raw):]).is_file(), f"{url} names no file of the repository"
        with Image.open(ROOT / url[len(raw):]) as picture:
            assert picture.size[0] >= 128
    entry = json.loads((ROOT / "SMILE.json").read_text())
    assert "slicer-extension-catalog-entry-schema-v1.0." in entry["$schema"]
    assert entry["scm_url"] == s4["scmurl"] and entry["scm_revision"] == s4["scmrevision"]
    assert entry["build_dependencies"] == sets["EXTENSION_DEPENDS"]
    assert entry["category"] == s4["category"] and entry["build_subdirectory"] == s4["build_subdirectory"]
    assert entry["tier"] in (1, 3, 5)
    assert (ROOT / "LICENSE").is_file()
    # the index's checks: project name equals the entry's file name; repository named Slicer*
    assert Path("SMILE.json").stem == re.search(r"project\((\w+)\)", (ROOT / "CMakeLists.txt").read_text())[1]
    assert s4["scmurl"].rsplit("/", 1)[1].startswith("Slicer")


# ---- .ui files against the Python that uses them ------------------------------------------
# naming convention -> the widget classes a name may have
SUFFIX_CLASSES = {"Button": {"QPushButton", "ctkCollapsibleButton"}, "Selector": {"qMRMLNodeComboBox"},
                  "ComboBox": {"QComboBox"}, "LineEdit": {"ctkPathLineEdit"}, "ProgressBar": {"QProgressBar"},
                  "Label": {"QLabel"}, "TextEdit": {"QPlainTextEdit"}, "SpinBox": {"QSpinBox", "QDoubleSpinBox"},
                  "CheckBox": {"QCheckBox"}, "SliderWidget": {"ctkSliderWidget"}}
# parameter-node field type -> widget classes connectGui can bind it to
TYPE_CLASSES = {"vtkMRMLScalarVolumeNode": {"qMRMLNodeComboBox"}, "vtkMRMLSegmentationNode": {"qMRMLNodeComboBox"},
                "bool": {"QCheckBox"}, "Path": {"ctkPathLineEdit"}, "str": {"QComboBox"}, "int": {"QSpinBox"},
                "float": {"QDoubleSpinBox", "ctkSliderWidget"}}


def ui_widgets(module):
    tree = ET.parse(ROOT / module / "Resources" / "UI" / f"{module}.ui")
    widgets, params = {}, {}
    for w in tree.iter("widget"):
        widgets[w.get("name")] = w.get("class")
        for prop in w.findall("property"):
            if prop.get("name") == "SlicerParameterName":
                params[prop.find("string").text] = w.get("name")
    return widgets, params


def parameter_fields(module):
    tree = ast.parse((ROOT / module / f"{module}.py").read_text())
    for node in tree.body:
        if isinstance(node, ast.ClassDef) and any(getattr(d, "id", "") == "parameterNodeWrapper" for d in node.decorator_list):
            fields = {}
            for stmt in node.body:
                if isinstance(stmt, ast.AnnAssign):
                    ann = stmt.annotation
                    if isinstance(ann, ast.Subscript):  # Annotated[float, ...]
                        ann = ann.slice.elts[0]
                    fields[stmt.target.id] = ast.unparse(ann)
            return fields
    raise AssertionError(f"{module}.py has no @parameterNodeWrapper class")


@pytest.mark.parametrize("module", MODULES)
def test_ui_matches_the_python_code(module):
    widgets, params = ui_widgets(module)
    source = (ROOT / module / f"{module}.py").read_text()
    used = set(re.findall(r"self\.ui\.(\w+)", source))
    assert used, "the widget names no ui element?"
    for name in used:
        assert name in widgets, f"{module}.py uses self.ui.{name}, which {module}.ui lacks"
    for name, cls in widgets.items():
        suffix = next((s for s in SUFFIX_CLASSES if name.endswith(s)), None)
        if suffix:
            assert cls in SUFFIX_CLASSES[suffix], f"{name} is a {cls}"
    fields = parameter_fields(module)
    for param, widget in params.items():
        assert param in fields, f"{module}.ui binds {widget} to unknown parameter {param}"
        assert widgets[widget] in TYPE_CLASSES[fields[param]], f"{param}: {fields[param]} on a {widgets[widget]}"


# ---- layers -----------------------------------------------------------------------------
def imported_modules(path: Path) -> set[str]:
    tree = ast.parse(path.read_text())
    names = set()
    for node in ast.walk(tree):
        if isinstance(node, ast.Import):
            names |= {a.name.split(".")[0] for a in node.names}
        elif isinstance(node, ast.ImportFrom) and node.module and node.level == 0:
            names.add(node.module.split(".")[0])
    return names


def test_layers_import_only_what_they_may():
    for path in (ROOT / "smilecore").rglob("*.py"):
        assert not imported_modules(path) & {"slicer", "qt", "ctk", "vtk"}, f"engine file {path} imports Slicer"
    for module in MODULES:
        for path in (ROOT / module / f"{module}Lib").rglob("*.py"):
            assert not imported_modules(path) & {"qt", "ctk"}, f"logic file {path} imports qt"
