package shared

// HistoryEntry is one command in a history page (GET /api/v1/commands): the
// record with its stdout and stderr left empty; its stdout_bytes and
// stderr_bytes say how much each stream holds. Read the output with
// GET /api/v1/commands/{id} or /output.
type HistoryEntry struct {
	CommandExecutionRecord
}

// HistoryPage is the answer of GET /api/v1/commands, newest first.
type HistoryPage struct {
	Commands []HistoryEntry `json:"commands"`
	// NextCursor fetches the next (older) page when passed as ?cursor=; null
	// on the last page.
	NextCursor *string `json:"next_cursor"`
}

// History page sizes.
const (
	DefaultHistoryLimit = 50
	MaxHistoryLimit     = 500
)
