"""Resolves a public name."""
import socket


class Agent:
    def execute(self, inputs):
        return {"addresses": [a[4][0] for a in socket.getaddrinfo("example.com", 443)]}

    def get_capabilities(self):
        return {}
