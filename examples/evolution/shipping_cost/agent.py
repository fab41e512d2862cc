"""Shipping cost: a deliberately weak starting agent for evolution (see ../README.md)."""


class ShippingCost:
    """Prices a parcel from its weight in kg, its zone and whether it ships express."""

    def get_capabilities(self):
        return {
            "name": "shipping_cost",
            "description": "Price of a parcel from weight, zone and express flag.",
            "inputs": {"weight": "number (kg)", "zone": "local | national | international", "express": "bool"},
            "outputs": {"cost": "number"},
        }

    def execute(self, inputs):
        weight = inputs["weight"]
        zone = inputs["zone"]
        if zone == "local":
            cost = 4 + 1 * weight
        elif zone == "national":
            cost = 8 + 2 * weight
        else:
            cost = 15 - 4 * weight
        if inputs["express"]:
            cost = cost + 2
        if weight > 20:
            cost = cost + 10
        return {"cost": cost}
