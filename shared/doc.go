// Package shared holds what the coordinator and the agent both speak on the
// wire: the public CommandExecutionRecord, the submit request and its
// validation, the JSON error envelope, and the agent protocol messages.
//
// Nothing here touches a database, a socket or runc: both binaries import it,
// so it stays small and free of dependencies beyond the standard library.
package shared
