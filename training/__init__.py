"""Training: the one loop, the task interface and the tasks, callbacks, metrics, distribution."""
