"""Dereferences a null pointer through ctypes."""
import ctypes


class Agent:
    def execute(self, inputs):
        return {"value": ctypes.string_at(8).decode()}

    def get_capabilities(self):
        return {}
