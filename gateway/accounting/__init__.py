"""Usage accounting: one record per client request, costed, buffered, stored and queried.

- `record.UsageRecord`: what the pipeline fills in (in a `finally`) and hands to the sink.
- `cost`: `Price`, `cost_usd()`, `load_prices()` for config/prices.yaml.
- `sink.UsageSink`: non-blocking `submit()`, bounded buffer, background batched writes.
- `memory_store.MemoryUsageStore` / `redis_store.RedisUsageStore`: aggregates (one interface).
- `jsonl.JsonlWriter`: the JSON-lines usage log.
- `query`: `query()`, `key_spend()`, `parse_usage_params()`, `format_rows()`.
- `traces`: `MemoryTraceStore` / `RedisTraceStore`.

Import the submodules directly; this package imports nothing at import time.
"""
