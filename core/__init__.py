"""chinwag's platform-agnostic conversation core: types, ports, the engine and its errors."""
