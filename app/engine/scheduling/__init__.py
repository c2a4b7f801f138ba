"""When and where work runs: dynamic batching of forward passes (`batching`, the items it queues in
`batch_items`) and CPU work off the event loop (`cpu_work`). Imports nothing of the rest of the engine."""
