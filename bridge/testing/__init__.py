"""What `pop3bridge demo` runs on besides the real bridge, and the tests and benchmarks reuse.

`samples` builds deterministic sample mail; `fakepop3` is a scriptable POP3 server that can also
misbehave on purpose. Only `bridge.demo` imports this package (tests/test_layering.py checks
it), and everything here is something the demo runs: a test-only helper such as the fault relay
lives in tests/support/, so it does not ship in the wheel or the image.
"""
