import io
import math

import pytest
import torch

from fluoseg.errors import FluosegError
from fluoseg.train.optim import build_optimizer, build_schedule


def parameter(value: float = 0.0) -> torch.nn.Parameter:
    return torch.nn.Parameter(torch.tensor([value]))


def learning_rates(schedule, values):
    """The learning rate of each epoch when the epochs end with ``values``."""
    seen = []
    for value in values:
        seen.append(schedule.learning_rate)
        schedule.optimizer.step()
        schedule.step(value)
    return seen


def test_adam_and_sgd_with_options():
    adam = build_optimizer([parameter()], "adam", learning_rate=0.01, weight_decay=0.1)
    assert isinstance(adam, torch.optim.Adam) and adam.param_groups[0]["weight_decay"] == 0.1
    sgd = build_optimizer([parameter()], "sgd", learning_rate=0.01, momentum=0.8)
    assert isinstance(sgd, torch.optim.SGD) and sgd.param_groups[0]["momentum"] == 0.8
    with pytest.raises(FluosegError, match="unknown optimizer"):
        build_optimizer([parameter()], "rmsprop", learning_rate=0.01)


def test_sgd_momentum_follows_the_study_equation():
    """v_t = momentum * v_(t-1) + g_t, theta_t = theta_(t-1) - lr * v_t (study eq. 4)."""
    p = parameter()
    sgd = build_optimizer([p], "sgd", learning_rate=0.1, momentum=0.9)
    for _ in range(2):
        sgd.zero_grad()
        p.sum().backward()  # gradient 1
        sgd.step()
    assert p.item() == pytest.approx(-0.1 - 0.1 * (0.9 * 1 + 1))


def test_step_cosine_plateau_and_none():
    def fresh(name, **options):
        return build_schedule(build_optimizer([parameter()], "sgd", learning_rate=1.0), name, **options)

    assert learning_rates(fresh("none"), [0] * 3) == [1.0, 1.0, 1.0]
    assert learning_rates(fresh("step", step_size=2, gamma=0.5), [0] * 5) == [1.0, 1.0, 0.5, 0.5, 0.25]
    cosine = learning_rates(fresh("cosine", epochs=4), [0] * 5)
    assert cosine[:3] == pytest.approx([1.0, (1 + math.cos(math.pi / 4)) / 2, 0.5]) and cosine[4] == pytest.approx(0.0)
    # Higher is better; two epochs without improvement (patience 1) cut the rate; NaN is skipped.
    plateau = learning_rates(fresh("plateau", gamma=0.1, patience=1), [0.5, 0.6, 0.6, float("nan"), 0.6, 0.7])
    assert plateau == pytest.approx([1.0, 1.0, 1.0, 1.0, 1.0, 0.1])
    with pytest.raises(FluosegError, match="unknown schedule"):
        fresh("linear")


@pytest.mark.parametrize("name", ["step", "cosine", "plateau"])
def test_schedule_state_survives_a_weights_only_checkpoint(name):
    values = [0.1, 0.2, 0.2, 0.2, 0.3, 0.3, 0.3, 0.3]

    def fresh():
        return build_schedule(build_optimizer([parameter()], "sgd", learning_rate=1.0), name, epochs=8, step_size=2,
                              gamma=0.5, patience=1)

    reference = learning_rates(fresh(), values)
    first = fresh()
    head = learning_rates(first, values[:3])
    buffer = io.BytesIO()
    torch.save({"optimizer": first.optimizer.state_dict(), "schedule": first.state_dict()}, buffer)
    buffer.seek(0)
    state = torch.load(buffer, weights_only=True)
    resumed = fresh()
    resumed.optimizer.load_state_dict(state["optimizer"])
    resumed.load_state_dict(state["schedule"])
    assert head + learning_rates(resumed, values[3:]) == pytest.approx(reference)


def test_state_of_another_schedule_is_refused():
    step = build_schedule(build_optimizer([parameter()], "adam", learning_rate=1.0), "step")
    cosine = build_schedule(build_optimizer([parameter()], "adam", learning_rate=1.0), "cosine", epochs=3)
    with pytest.raises(FluosegError, match="schedule"):
        cosine.load_state_dict(step.state_dict())
