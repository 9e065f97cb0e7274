"""Translation of the user-visible messages written by the modules' logic (SMILESynthesisLib,
SMILETrainerLib), which must not import qt.

Inside Slicer this is Slicer's own translation (`slicer.i18n.translate`, which asks the application's
translator), with the context `slicer.i18n.tr` would use for the calling file
("SMILESynthesisLib.logic", ...), so that Slicer's lupdate finds each `_("...")` of these files as it
finds the widgets'. Where there is no Slicer application (pytest with the slicer-core wheel, the worker
process, a script) the English text is returned unchanged. Like `slicer.i18n.tr`, a translation whose
{placeholders} differ from the source text is not used: `.format()` would fail on it.

    from .i18n import tr as _
    raise ValueError(_("the {role} output cannot be ...").format(role=...))
"""
from __future__ import annotations

import re
import sys

_PLACEHOLDER = re.compile(r"(?<!\{)\{([^{}]+)\}(?!\})")


def _translate(context: str, text: str) -> str:
    """Slicer's translation of `text`, or `text` where no Slicer application is running."""
    try:
        import slicer
        from slicer.i18n import translate
        slicer.app  # noqa: B018 (the slicer-core wheel has the package, not the application)
    except (ImportError, AttributeError):
        return text
    return translate(context, text)


def tr(text: str) -> str:
    """`text` in the application's language; the context is the calling file's, as slicer.i18n.tr's."""
    from pathlib import Path
    caller = Path(sys._getframe(1).f_code.co_filename)
    package = caller.parent.name if (caller.parent / "__init__.py").is_file() else ""
    context = f"{package}.{caller.stem}" if package else caller.stem
    translated = _translate(context, text)
    if set(_PLACEHOLDER.findall(translated)) != set(_PLACEHOLDER.findall(text)):
        return text
    return translated
