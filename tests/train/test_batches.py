import numpy as np
import pytest

from fluoseg.data.augment import Augmenter
from fluoseg.data.dataset import PatchSampler, PreparedSample
from fluoseg.errors import FluosegError
from fluoseg.tasks import IGNORE_INDEX
from fluoseg.train.batches import epoch_batches


def sampler(seed=0):
    rng = np.random.default_rng(seed)
    samples = []
    for i in range(3):
        target = (rng.random((32, 32)) > 0.7).astype(np.int64)
        samples.append(PreparedSample(id=f"s{i}", image=rng.normal(size=(1, 32, 32)).astype(np.float32),
                                      availability=np.ones(1, np.float32),
                                      targets={"classes": target, "weights": np.ones((32, 32), np.float32)},
                                      sampling_map=target))
    generator = np.random.default_rng(seed)
    return PatchSampler(samples, input_size=16, output_size=16, fill={"classes": IGNORE_INDEX, "weights": 0.0},
                        foreground_fraction=0.5, augmenter=Augmenter(rng=generator), rng=generator)


def as_arrays(batches):
    return [(np.asarray(images), {k: np.asarray(v) for k, v in targets.items()}) for images, _, targets in batches]


def same(a, b):
    return len(a) == len(b) and all(np.array_equal(x[0], y[0]) and
                                    all(np.array_equal(x[1][k], y[1][k]) for k in x[1]) for x, y in zip(a, b))


def test_without_workers_the_batches_come_from_the_sampler_generator():
    drawn = as_arrays(epoch_batches(sampler(), 2, 5, workers=0, seed=(0, 1)))
    reference = sampler()
    assert same(drawn, as_arrays(reference.batch(2) for _ in range(5)))


@pytest.mark.parametrize("steps", [1, 5, 7])
def test_workers_deliver_every_step_in_order_and_depend_only_on_the_seed(steps):
    with_workers = as_arrays(epoch_batches(sampler(), 3, steps, workers=3, seed=(0, 2)))
    assert len(with_workers) == steps
    # step s is worker s % 3's (s // 3)-th batch drawn from default_rng([0, 2, s % 3])
    per_worker = [sampler().reseeded(np.random.default_rng([0, 2, worker])) for worker in range(3)]
    expected = [per_worker[step % 3].batch(3) for step in range(steps)]
    assert same(with_workers, as_arrays(expected))
    used = sampler()
    used.batch(4)  # what the sampler drew before does not matter
    assert same(with_workers, as_arrays(epoch_batches(used, 3, steps, workers=3, seed=(0, 2))))


def test_another_epoch_seed_draws_other_batches_and_leaves_the_sampler_alone():
    source = sampler()
    state = source.rng.bit_generator.state
    one = as_arrays(epoch_batches(source, 2, 2, workers=2, seed=(0, 1)))
    two = as_arrays(epoch_batches(source, 2, 2, workers=2, seed=(0, 2)))
    assert not np.array_equal(one[0][0], two[0][0])
    assert not np.array_equal(one[0][0], one[1][0])  # the workers draw different batches
    assert source.rng.bit_generator.state == state


def test_reseeded_sampler_gets_its_own_augmenter_generator():
    source = sampler()
    twin = source.reseeded(np.random.default_rng(5))
    assert twin.rng is twin.augmenter.rng and twin.augmenter is not source.augmenter
    assert source.augmenter.rng is source.rng and twin.samples is source.samples


class DyingSampler(PatchSampler):
    """Kills the worker process that draws from it, as the kernel does to one out of memory."""

    def batch(self, size):
        import os
        import signal

        os.kill(os.getpid(), signal.SIGKILL)


def test_a_dead_worker_is_a_one_line_user_error_naming_the_fix():
    source = sampler()
    source.__class__ = DyingSampler
    with pytest.raises(FluosegError, match=r"train\.workers below 2 .*shm-size"):
        list(epoch_batches(source, 2, 4, workers=2, seed=(0, 1)))
