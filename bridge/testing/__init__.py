"""In-package fakes shared by the test suite, the benchmarks and `pop3bridge demo`.

`samples` builds deterministic sample mail; `fakepop3` is a scriptable POP3 server that can also
misbehave on purpose. Neither is imported by production code paths other than the demo.
"""
