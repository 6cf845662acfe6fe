"""Channel layer group names and the event types sent to them."""

# Every server process's relay channel is in both groups.
WORDS_GROUP = "wordstream.words"
PRESENCE_GROUP = "wordstream.presence"

# One word for the whole deployment: {"word", "seq", "ts"}.
WORD_TICK = "word.tick"
# One process's WebSocket client count: {"process", "count", "query"}.
PRESENCE_REPORT = "presence.report"
