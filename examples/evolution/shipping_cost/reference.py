"""Shipping cost: the intended behaviour the suite encodes (evolution never sees this file)."""


class ShippingCost:
    """Prices a parcel from its weight in kg, its zone and whether it ships express."""

    def get_capabilities(self):
        return {"name": "shipping_cost", "outputs": {"cost": "number"}}

    def execute(self, inputs):
        weight = inputs["weight"]
        zone = inputs["zone"]
        if zone == "local":
            cost = 5 + 1 * weight
        elif zone == "national":
            cost = 8 + 2 * weight
        else:
            cost = 15 + 4 * weight
        if inputs["express"]:
            cost = cost * 2
        if weight >= 20:
            cost = cost + 10
        return {"cost": cost}
