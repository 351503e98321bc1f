"""benchmarks/step_profile.py: op_name -> component attribution, and a profiled tiny epoch."""

import pytest

from benchmarks import step_profile


def test_component_of_reads_module_paths_and_named_scopes():
    prefix = "jit(epoch_fn)/while/body/closed_call/"
    cases = {
        "transpose(jvp(RecGOAT))/branch_image/gat_0/gather": "gat[image]",
        "jvp(RecGOAT)/branch_text/proj/dot_general": "projection[text]",
        "jvp(RecGOAT)/user_branch_text/gat_0/exp": "user gat[text]",
        "jvp(RecGOAT)/fuse/sinkhorn/while/body/add": "fusion + OAT",
        "transpose(jvp(RecGOAT))/propagation/bcsr_dot_general": "propagation",
        "jvp()/infonce/while/body/closed_call/dot_general": "infonce",
        "transpose(jvp())/ot_loss/while/body/dot_general": "ot loss",
        "jvp()/bpr/gather": "bpr/l2/batch rows",
        "optimizer/add": "adam",
        "jvp()/concatenate": "other",
    }
    for op, want in cases.items():
        assert step_profile.component_of(prefix + op) == want, op


def test_op_names_parses_instructions_of_hlo_text():
    hlo = ('  %ynn_fusion.3 = f32[4,4]{1,0} fusion(%a, %b), kind=kCustom, '
           'metadata={op_name="jit(f)/infonce/dot_general" stack_frame_id=3}\n'
           '  ROOT %add.1 = f32[4]{0} add(%x, %y), metadata={op_name="jit(f)/bpr/add"}\n'
           '  %p = f32[4]{0} parameter(0)\n')
    assert step_profile.op_names(hlo) == {"ynn_fusion.3": "jit(f)/infonce/dot_general",
                                          "add.1": "jit(f)/bpr/add"}


@pytest.mark.slow
def test_profiled_tiny_epoch_attributes_time_to_the_model_components(tmp_path):
    result = step_profile.main(["--preset", "tiny", "--dims", "8", "--batches", "1",
                                "--set", "train.batch_size=64", "--set", "model.knn_k=5",
                                "--out", str(tmp_path)])
    (setting,) = result["settings"]
    per = setting["per_component_s"]
    assert {"infonce", "gat[image]", "gat[text]", "propagation"} <= set(per)
    assert all(v >= 0 for v in per.values()) and per["infonce"] > 0
    assert (tmp_path / "step_profile.md").read_text().count("## recgoat, d = 8") == 1


@pytest.mark.slow
def test_another_config_profiles_its_own_components(tmp_path):
    result = step_profile.main(["--preset", "tiny", "--dims", "8", "--batches", "1",
                                "--config", "recgoat-paper", "--set", "train.batch_size=64",
                                "--set", "model.knn_k=5", "--set", "model.user_knn_k=5",
                                "--set", "loss.ot_rows=32", "--out", str(tmp_path)])
    (setting,) = result["settings"]
    assert setting["config"] == "recgoat-paper"
    assert setting["per_component_s"]["ot loss"] > 0  # the paper's OT loss, absent from reference
    assert "Config: `recgoat-paper`" in (tmp_path / "step_profile.md").read_text()
