"""An MCP 'server' that reads its requests and never answers (initialize must time out)."""

import sys

for _ in sys.stdin:
    pass
