"""The lessons' shared setup: parameters in, a base model on the asked device and dtype out."""

import pytest
import torch

from unikit import lesson, profiles
from unikit import model as M


def test_setup_loads_fresh_copies_on_the_device_in_the_dtype(tmp_path):
    path = M.save_model(M.build_model("smoke", seed=0), path=tmp_path / "tiny")
    kit = lesson.setup("smoke", seed=3, device="cpu", base=str(path), dtype="bfloat16")
    a, b = kit.model(), kit.model()
    assert a is not b and a.model.dtype == torch.bfloat16 and a.device.type == "cpu"
    assert kit.schedule.stage1_steps == 3 and "dtype=bfloat16" in str(kit)
    assert kit.base_metrics is None  # a tiny model has no pretraining record


def test_gpu_profile_defaults_to_janus_pro_and_bad_parameters_are_refused():
    assert lesson.setup("gpu", device="cpu").base == lesson.GPU_BASE
    assert lesson.setup("teach", device="cpu").base is None  # the shipped base model
    with pytest.raises(profiles.ProfileError, match="choose one of smoke, teach, gpu"):
        lesson.setup("laptop")
    with pytest.raises(ValueError, match="choose one of float32, bfloat16, float16"):
        lesson.setup("smoke", device="cpu", dtype="double")


def test_a_quick_profile_runs_a_lesson_on_two_of_its_concepts():
    names = ["bo", "kiki", "luna"]
    assert [c.name for c in lesson.setup("teach", device="cpu").concepts(names)] == names
    assert [c.name for c in lesson.setup("smoke", device="cpu").concepts(names)] == ["bo", "kiki"]
