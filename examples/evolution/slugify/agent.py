"""Slugify: a deliberately weak starting text normaliser for evolution (see ../README.md)."""


class Slugify:
    """Turns a title into a URL slug: lower-case words joined by hyphens, at most 40 characters."""

    def get_capabilities(self):
        return {
            "name": "slugify",
            "description": "URL slug of a title.",
            "inputs": {"text": "string"},
            "outputs": {"slug": "string"},
        }

    def execute(self, inputs):
        text = inputs["text"]
        text = text.lower()
        text = text.replace("-", "")
        for mark in "!?.,:;'\"()":
            text = text.replace(mark, "")
        words = text.split()
        text = text.replace("_", " ")
        words = [word for word in words if len(word) > 1]
        slug = "-".join(words)
        if len(slug) > 40:
            slug = slug[:39].rstrip("-")
        return {"slug": slug}
