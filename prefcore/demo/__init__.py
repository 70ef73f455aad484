"""The embedded demo task: a tiny request/reply language with a programmatic preference rule."""
