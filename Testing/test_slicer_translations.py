"""Issue 22, 11c: every text a user reads goes through translation. In the widget files, an AST check
finds a string literal or f-string that reaches a user-visible place (a widget's text, a dialog, a
module's title or help, an exception the panel shows) outside `_()`/`tr()`/`translate()`; and the
logic's messages (SMILESynthesisLib, SMILETrainerLib: no qt) reach Slicer's translation through
SMILESynthesisLib.i18n, with the context Slicer's lupdate gives their files."""
import ast

import pytest

from slicer_widget_helpers import ROOT, slicer, standins  # noqa: F401 (slicer: the fixture)

WIDGET_FILES = [ROOT / "SMILESynthesis" / "SMILESynthesis.py", ROOT / "SMILETrainer" / "SMILETrainer.py"]
LOGIC_FILES = sorted((ROOT / "SMILESynthesis" / "SMILESynthesisLib").glob("*.py")) + sorted(
    (ROOT / "SMILETrainer" / "SMILETrainerLib").glob("*.py"))
TRANSLATE = {"_", "tr", "translate"}
# where a text is shown: attributes of widgets and of a module's parent, and the first argument of calls
SHOWN_ATTRIBUTES = {"text", "toolTip", "statusTip", "windowTitle", "placeholderText", "title", "helpText",
                    "acknowledgementText", "plainText"}
SHOWN_BY_CALLS = {"errorDisplay", "infoDisplay", "warningDisplay", "messageBox", "confirmOkCancelDisplay",
                  "confirmYesNoDisplay", "delayDisplay", "tryWithErrorDisplay", "setText", "setToolTip",
                  "setWindowTitle", "setPlaceholderText", "setTitle", "addItem", "showStatusMessage",
                  "appendPlainText", "setPlainText"}


def _name(func) -> str:
    return func.id if isinstance(func, ast.Name) else func.attr if isinstance(func, ast.Attribute) else ""


def _is_text(node) -> bool:
    """A literal text, an f-string, or a translation (possibly formatted)."""
    if isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute) and node.func.attr == "format":
        node = node.func.value
    return (isinstance(node, ast.JoinedStr) or (isinstance(node, ast.Constant) and isinstance(node.value, str))
            or (isinstance(node, ast.Call) and _name(node.func) in TRANSLATE))


def _untranslated(node) -> list[ast.AST]:
    """The literal texts (with a letter) and f-strings in an expression that are not inside a translation
    call; a translation call must be given a plain literal (lupdate reads literals only)."""
    if isinstance(node, ast.Call) and _name(node.func) in TRANSLATE:
        text = node.args[-1] if node.args else None
        return [] if isinstance(text, ast.Constant) and isinstance(text.value, str) else [node]
    if isinstance(node, ast.JoinedStr):
        return [node]
    if isinstance(node, ast.Constant):
        return [node] if isinstance(node.value, str) and any(c.isalpha() for c in node.value) else []
    if isinstance(node, ast.Call):  # `"\n".join([...])`, `_("...").format(...)`, `self._status(...)`
        parts = [node.func.value] if isinstance(node.func, ast.Attribute) else []
        return [bad for part in parts + node.args + [k.value for k in node.keywords if k.arg != "detailedText"]
                for bad in _untranslated(part)]
    if isinstance(node, ast.BinOp) and any(_is_text(side) for side in (node.left, node.right)):
        return [node]  # a text concatenated ("+") or %-formatted: a translator sees only a piece
    if isinstance(node, (ast.BinOp, ast.BoolOp, ast.IfExp, ast.List, ast.Tuple)):
        return [bad for child in ast.iter_child_nodes(node) if isinstance(child, ast.expr)
                for bad in _untranslated(child)]
    return []  # a name, an attribute, a subscript: its value was checked where it was made


def untranslated_texts(source: str) -> list[str]:
    """'line N: text' for each user-visible text outside translation in a module's source."""
    found = set()
    for node in ast.walk(ast.parse(source)):
        shown = []
        if isinstance(node, ast.Assign):
            shown = [node.value] if any(isinstance(t, ast.Attribute) and t.attr in SHOWN_ATTRIBUTES
                                        for t in node.targets) else []
        elif isinstance(node, ast.Call) and _name(node.func) in SHOWN_BY_CALLS and node.args:
            shown = [node.args[0]]
        elif isinstance(node, ast.Raise) and isinstance(node.exc, ast.Call) and node.exc.args:
            shown = [node.exc.args[0]]  # shown by tryWithErrorDisplay or the panel's status
        found |= {(bad.lineno, ast.get_source_segment(source, bad)) for value in shown for bad in _untranslated(value)}
    return [f"line {line}: {text}" for line, text in sorted(found)]


def test_the_check_finds_what_it_is_meant_to_find():
    """The check itself, on code written for it: each kind of slip is found, translated texts are not."""
    slips = untranslated_texts('\n'.join([
        'self.ui.statusLabel.text = "Done."',
        'self.ui.statusLabel.text = f"slice {k}"',
        'slicer.util.errorDisplay(_("failed: ") + str(e))',
        'self.delayDisplay("Loading the sample")',
        'self.ui.applyButton.text = _("Cancel") if running else "Apply"',
        'raise ValueError(f"no file {path}")',
        'label.setToolTip(_(f"a {name}"))',
        'self.parent.title = "SMILE"']))
    assert [s.split(":")[0] for s in slips] == [f"line {k}" for k in range(1, 9)], slips
    assert untranslated_texts('\n'.join([
        'self.ui.statusLabel.text = _("Done.")',
        'self.ui.statusLabel.text = _("slice {k}").format(k=k)',
        'self.ui.statusLabel.text = "\\n".join([_("a"), message])',
        'slicer.util.errorDisplay(_("failed: {e}").format(e=e), detailedText="\\n".join(log))',
        'self.ui.applyButton.text = _("Cancel") if running else _("Apply")',
        'self.parent.categories = [translate("qSlicerAbstractCoreModule", "Segmentation")]'])) == []


@pytest.mark.parametrize("path", WIDGET_FILES, ids=lambda p: p.name)
def test_the_widget_files_show_no_untranslated_text(path):
    assert untranslated_texts(path.read_text()) == []


def test_the_logic_files_translate_through_slicers_translation(slicer, monkeypatch):
    """The logic's messages (no qt there): with a translator that marks each text and records its
    context, the messages a user reads come back marked, from the contexts lupdate gives their files;
    without a Slicer application the English text is returned unchanged."""
    asked = []

    def marking(context, text):
        asked.append(context)
        return f"<{text}>"
    monkeypatch.setattr(slicer.app, "translate", marking)
    from SMILESynthesisLib import NEW, Outputs, check_outputs, i18n
    from SMILESynthesisLib.logic import model_choices
    from SMILETrainerLib.logic import DatasetReport
    volume = slicer.mrmlScene.AddNewNodeByClass("vtkMRMLScalarVolumeNode", "head")
    with pytest.raises(ValueError) as refused:
        check_outputs(volume, Outputs(pseudoNormal=volume, lesion=NEW))
    assert str(refused.value).startswith("<the <pseudo-normal> output cannot be the input volume 'head'")
    assert model_choices()[0][0] == "<Default T2 model (bundled)>"
    assert DatasetReport("/data", "t2").summary().startswith("<No BraTS cases found in /data")
    assert {"SMILESynthesisLib.logic", "SMILETrainerLib.logic"} <= set(asked)
    monkeypatch.setattr(slicer.app, "translate", lambda context, text: text.replace("{output}", "{sortie}"))
    with pytest.raises(ValueError, match="^the pseudo-normal output cannot be the input volume 'head'"):
        check_outputs(volume, Outputs(pseudoNormal=volume))  # a translation that breaks a placeholder: not used
    monkeypatch.delattr(slicer, "app")
    assert i18n.tr("a text") == "a text"  # no Slicer application: pytest with the wheel, the worker
    untranslated = {f"{path.parent.name}/{path.name}": untranslated_texts(path.read_text()) for path in LOGIC_FILES}
    assert untranslated == {name: [] for name in untranslated}, untranslated
