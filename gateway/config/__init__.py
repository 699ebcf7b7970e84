"""Configuration: load, expand, validate (see loader.py) into the frozen shape of schema.py."""
from gateway.config.loader import ConfigError, load_config, parse_config
from gateway.config.schema import GatewayConfig

__all__ = ["ConfigError", "GatewayConfig", "load_config", "parse_config"]
