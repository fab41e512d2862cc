"""Slugify: the intended behaviour the suite encodes (evolution never sees this file)."""


class Slugify:
    """Turns a title into a URL slug: lower-case words joined by hyphens, at most 40 characters."""

    def get_capabilities(self):
        return {"name": "slugify", "outputs": {"slug": "string"}}

    def execute(self, inputs):
        text = inputs["text"]
        text = text.lower()
        for mark in "!?.,:;'\"()":
            text = text.replace(mark, "")
        text = text.replace("_", " ")
        words = text.split()
        words = [word for word in words if len(word) > 0]
        slug = "-".join(words)
        if len(slug) > 40:
            slug = slug[:40].rstrip("-")
        return {"slug": slug}
