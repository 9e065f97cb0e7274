"""The paper's four training phases are four functions named after them (smilecore/phases.py),
each documenting the loss it implements in the paper's notation, and the trainer runs them."""
import inspect

import pytest

from smilecore import phases
from smilecore.phases import (PHASES, next_eps, phase1_generator_vs_segmentor, phase2_reconstructor,
                              phase3_reconstructor_vs_segmentor, phase4_joint_finetune)
from smilecore.train import Trainer

from conftest import tiny_config

# phase -> (its function, what its docstring must name: the networks and the losses of DESIGN.md 1)
EXPECTED = {1: (phase1_generator_vs_segmentor, ["G and S adversarially", "L_gen", "L_seg",
                                                "L_ce(S(G(I)), 0)", "L_mse((1-M) I, (1-M) G(I))"]),
            2: (phase2_reconstructor, ["R alone", "L_recons = L_mse(Pab, I)", "Pab = R(G(I), M)"]),
            3: (phase3_reconstructor_vs_segmentor, ["R and S adversarially", "L_seg", "L_ce(S(Pab), M)",
                                                    "L_recons"]),
            4: (phase4_joint_finetune, ["G, S and R", "L_gen", "L_seg", "L_recons"])}


@pytest.mark.parametrize("phase", [1, 2, 3, 4])
def test_each_phase_is_a_short_function_named_after_it_documenting_its_loss(phase):
    function, mentions = EXPECTED[phase]
    assert PHASES[phase] is function and function.__name__.startswith(f"phase{phase}_")
    doc = inspect.getdoc(function)
    assert doc.startswith(f"Phase {phase},")
    for text in mentions:
        assert text in doc, f"{function.__name__}'s docstring does not name {text!r}"
    assert len(inspect.getsource(function).splitlines()) <= 20


def test_the_segmentor_step_and_the_confidence_enhancer_state_their_losses():
    assert "L_seg = L_ce(S(G(I)), M) + L_ce(S(Pab), M)" in inspect.getdoc(phases.segmentor_step)
    doc = inspect.getdoc(phases.confidence_enhancer)
    assert "PL = 1 where p" in doc and "L_semi = L_ce(S(U), PL)" in doc and "M := PL" in doc
    assert "L_gen = L_mse((1-M) I, (1-M) G(I)) + L_ce(S(G(I)), 0)" in inspect.getdoc(phases.generator_loss)


def test_eps_becomes_the_average_confidence_seen_kept_within_bounds():
    record = phases.new_confidence_record()
    assert next_eps(0.9, record) == 0.9                      # no lesion call: unchanged
    assert next_eps(0.9, dict(record, conf_sum=7.0, conf_count=10)) == pytest.approx(0.7)
    assert next_eps(0.9, dict(record, conf_sum=10.0, conf_count=10)) == 0.99
    assert next_eps(0.9, dict(record, conf_sum=1.0, conf_count=10)) == 0.5


def test_the_trainer_runs_the_phase_functions_in_the_papers_order(cohort, tmp_path, monkeypatch):
    calls = []
    for phase, function in list(PHASES.items()):
        monkeypatch.setitem(PHASES, phase, lambda step, f=function, p=phase: calls.append(p) or f(step))
    Trainer(tiny_config(cohort, tmp_path, epochs=1, steps_per_epoch=2, base=4, depth=2)).run()
    assert calls == [1, 1, 2, 2, 3, 3, 4, 4]
