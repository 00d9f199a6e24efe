"""The stand-alone recipe runs where its model is (session 9 added CUDA; these tests run on the CPU)."""
import torch
from torch import nn

from search_space.arch import Arch
from searchers.data import load_dataset
from searchers.training import Recipe, model_device, train_arch

TINY = ("stem_i3_o16_k3_s2_re-mbconv_i16_o24_m48_k3_s2_re-mbconv_i24_o24_m72_k3_s1_re_skip-"
        "head_l96_h128_re")


def test_model_device_is_where_the_parameters_are():
    assert model_device(nn.ReLU()) == torch.device("cpu")           # no parameters: the CPU
    assert model_device(nn.Linear(2, 2)) == torch.device("cpu")
    assert model_device(nn.Linear(2, 2, device="meta")) == torch.device("meta")


def test_train_arch_on_the_cpu_device_is_the_default_run_bit_for_bit():
    torch.set_num_threads(1)
    data = load_dataset("fashion-mnist", seed=0)
    arch = Arch.from_string(TINY)
    r = Recipe(epochs=1, images_per_epoch=256, batch_size=64, eval_images=200, precise_bn=1)
    m1, s1 = train_arch(arch, data, r, seed=3)
    m2, s2 = train_arch(arch, data, r, seed=3, device="cpu")
    assert s1["accuracy"] == s2["accuracy"] and s1["final_loss"] == s2["final_loss"] and s1["steps"] == 4
    for (k, a), (_, b) in zip(m1.state_dict().items(), m2.state_dict().items()):
        assert torch.equal(a, b), k
