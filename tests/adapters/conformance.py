"""The conformance cases: the same OpenAI requests, run through every adapter.

Each adapter's `tests/adapters/<name>/test_conformance.py` iterates over CASES and asserts the
exact upstream request body its adapter builds for each (and the translated response), so every
case is checked against every wire format. Add a case here and every adapter suite must answer it.
"""
from __future__ import annotations

from typing import Any

WEATHER_TOOL = {
    "type": "function",
    "function": {
        "name": "get_weather",
        "description": "Get current weather for a location",
        "parameters": {"type": "object", "properties": {"location": {"type": "string"}},
                       "required": ["location"]},
    },
}
PNG_DATA_URL = "data:image/png;base64,iVBORw0KGgoAAAANSUhEUgAAAAEAAAABCAYAAAAfFcSJAAAADUlEQVR42mNkYPhfDwAChwGA60e6kgAAAABJRU5ErkJggg=="  # noqa: E501

CASES: dict[str, dict[str, Any]] = {
    "basic": {"messages": [{"role": "user", "content": "Hello!"}]},
    "system_and_sampling": {
        "messages": [{"role": "system", "content": "Be brief."},
                     {"role": "developer", "content": "Answer in English."},
                     {"role": "user", "content": "Hi"}],
        "temperature": 0.5, "top_p": 0.9, "max_tokens": 100, "stop": ["END", "STOP"],
        "user": "user-42",
    },
    "multi_turn_merge": {
        "messages": [{"role": "user", "content": "one"}, {"role": "user", "content": "two"},
                     {"role": "assistant", "content": "three"}, {"role": "user", "content": "four"}],
    },
    "tools_auto": {
        "messages": [{"role": "user", "content": "Weather in Paris?"}],
        "tools": [WEATHER_TOOL], "tool_choice": "auto",
    },
    "tools_required": {
        "messages": [{"role": "user", "content": "Weather in Paris?"}],
        "tools": [WEATHER_TOOL], "tool_choice": "required", "parallel_tool_calls": False,
    },
    "tools_named": {
        "messages": [{"role": "user", "content": "Weather in Paris?"}],
        "tools": [WEATHER_TOOL],
        "tool_choice": {"type": "function", "function": {"name": "get_weather"}},
    },
    "tools_none": {
        "messages": [{"role": "user", "content": "Weather in Paris?"}],
        "tools": [WEATHER_TOOL], "tool_choice": "none",
    },
    "tool_round_trip": {
        "messages": [
            {"role": "user", "content": "Weather in Paris and Rome?"},
            {"role": "assistant", "content": None, "tool_calls": [
                {"id": "call_1", "type": "function",
                 "function": {"name": "get_weather", "arguments": "{\"location\":\"Paris\"}"}},
                {"id": "call_2", "type": "function",
                 "function": {"name": "get_weather", "arguments": "{\"location\":\"Rome\"}"}}]},
            {"role": "tool", "tool_call_id": "call_1", "content": "{\"temp_c\":18}"},
            {"role": "tool", "tool_call_id": "call_2", "content": "{\"temp_c\":24}"},
        ],
        "tools": [WEATHER_TOOL],
    },
    "image_data_url": {
        "messages": [{"role": "user", "content": [
            {"type": "text", "text": "What is in this image?"},
            {"type": "image_url", "image_url": {"url": PNG_DATA_URL}}]}],
    },
    "image_https_url": {
        "messages": [{"role": "user", "content": [
            {"type": "text", "text": "What is in this image?"},
            {"type": "image_url", "image_url": {"url": "https://example.com/photo.jpg"}}]}],
    },
    "json_object": {
        "messages": [{"role": "user", "content": "Reply in JSON."}],
        "response_format": {"type": "json_object"},
    },
    "json_schema": {
        "messages": [{"role": "user", "content": "Weather in Tokyo"}],
        "response_format": {"type": "json_schema", "json_schema": {
            "name": "weather", "strict": True,
            "schema": {"type": "object",
                       "properties": {"location": {"type": "string"},
                                      "temperature": {"type": "number"}},
                       "required": ["location", "temperature"],
                       "additionalProperties": False}}},
    },
    "streaming": {
        "messages": [{"role": "user", "content": "Hello!"}], "stream": True,
        "stream_options": {"include_usage": True},
    },
    "web_search": {
        "messages": [{"role": "user", "content": "Latest AI news this week"}],
        "tools": [{"type": "web_search"}],
    },
}
