"""A plain synchronous script: no async anywhere, the bus runs on a thread of its own.

Shows `TaskBus.start_threaded()` used as a ``with`` block: registering a sync
handler with ``@tb.task``, a progress listener, submitting by definition (a
typed handle) and by name, waiting for results from the main thread, and a
failed task's `TaskFailedError` reaching the caller unchanged. Prints the
progress lines, ``resized 3 images: ['a.png', 'b.png', 'c.png']``,
``thumbnails: 2 images`` and ``bad input: failed as fatal: no such file: missing.png``.

Run: ``.venv/bin/python examples/sync_script.py``
"""

import time

from taskbus import FatalError, TaskBus, TaskContext, TaskFailedError, TaskProgress


def main() -> None:
    with TaskBus.start_threaded(workers=2) as tb:

        @tb.task("images:resize", description="Resize images")
        def resize(ctx: TaskContext, paths: list[str]) -> list[str]:
            # A plain `def` handler runs on a worker thread: no await, no async.
            for done, path in enumerate(paths, start=1):
                if path.startswith("missing"):
                    raise FatalError(f"no such file: {path}")
                time.sleep(0.05)
                ctx.progress(current=done, total=len(paths), message=f"resized {path}")
            return [path.replace(".jpg", ".png") for path in paths]

        # Without a dispatcher, listeners run on the bus's thread: keep them quick.
        def on_progress(event: TaskProgress) -> None:
            print(f"  {event.progress:5.1f}% {event.message}")

        tb.on(TaskProgress, on_progress)

        handle = tb.submit(resize, ["a.jpg", "b.jpg", "c.jpg"])  # ThreadedHandle[list[str]]
        images = handle.result(timeout=10)  # blocks this thread only
        print(f"resized {len(images)} images: {images}")

        other = tb.submit("images:resize", ["d.jpg", "e.jpg"], priority=8)
        print(f"thumbnails: {len(tb.result(other.id, timeout=10))} images")

        bad = tb.submit(resize, ["missing.png"])
        try:
            bad.result(timeout=10)
        except TaskFailedError as exc:
            error = exc.snapshot.error
            assert error is not None
            print(f"bad input: failed as {exc.error_type}: {error.message}")


if __name__ == "__main__":
    main()
