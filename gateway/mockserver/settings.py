"""What every fake provider app is configured with (`modelyard mock-provider` flags)."""
from __future__ import annotations

import random
from dataclasses import dataclass, field


@dataclass
class MockSettings:
    latency_ms: float = 0
    fail_rate: float = 0.0
    chunk_words: int = 1
    rng: random.Random = field(default_factory=lambda: random.Random(0))
