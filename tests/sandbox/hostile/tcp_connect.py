"""Connects to a TCP listener on the host's loopback (port given in the inputs)."""
import socket


class Agent:
    def execute(self, inputs):
        conn = socket.create_connection(("127.0.0.1", inputs["port"]), timeout=2)
        conn.sendall(b"exfiltrated")
        return {"connected": True}

    def get_capabilities(self):
        return {}
