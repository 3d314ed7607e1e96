"""Training progress on the driver: rank 0's step and loss reach ``train(progress=...)`` through a Ray queue
(not tqdm_ray, whose bars ride on the workers' log forwarding)."""

from __future__ import annotations

from training.trainer import _progress_feed, _QueueBar


def test_rank_zero_steps_and_loss_reach_the_driver(ray_session):
    import ray

    @ray.remote(num_cpus=0)
    def rank_zero(queue) -> None:
        """What the loop does with its progress hook on rank 0, resumed at step 10 of 50."""
        bar = _QueueBar(queue, total=50, initial=10)
        for step in range(11, 51):
            bar.update(1)
            bar.set_postfix({"loss": f"{1 / step:.4f}"})
        bar.close()

    seen: list[tuple] = []
    with _progress_feed(lambda step, total, **metrics: seen.append((step, total, metrics))) as queue:
        ray.get(rank_zero.remote(queue))
    assert seen[0] == (11, 50, {"loss": "0.0909"})
    assert seen[-1] == (50, 50, {"loss": "0.0200"})  # the final state, sent on close
    assert len(seen) < 10  # at most twice a second, not once a step
    with _progress_feed(None) as queue:
        assert queue is None
