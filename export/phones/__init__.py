"""Running our exported files where phones run them: device scripts, and LiteRT's aarch64 build under emulation."""
