"""The engine: admission, scheduling, batching and cancellation of generations, on one worker thread."""
