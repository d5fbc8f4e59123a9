package wire

import "time"

// File-transfer message types (proto 2).
const (
	FileStat  = "stat"
	FileInfo  = "file_info"
	FileGet   = "get_file"
	FilePut   = "put_file"
	FileChunk = "file_chunk"
	FileAck   = "ack"
	FileError = "error"
)

// File-transfer constants shared by both ends (docs/protocol.md §5).
const (
	// FileChunkSize is the largest file_chunk body.
	FileChunkSize = 4096
	// FileWindowChunks is how many chunks may be unacknowledged.
	FileWindowChunks = 20
	// FileAckEvery is how many received chunks the server takes per ack.
	FileAckEvery = 10
)

// FileErrorBody is the body of a file-transfer "error".
type FileErrorBody struct {
	Error       string `msgpack:"err"`
	MessageType string `msgpack:"msgtype,omitempty"`
	MessageID   string `msgpack:"msgid,omitempty"`
	// Code is the HTTP status the server gives the user for the failed
	// request (tether's addition; mender-connect sends none, so every
	// failure read as 400).
	Code int `msgpack:"code,omitempty"`
}

// FilePathBody is the body of "stat" and "get_file".
type FilePathBody struct {
	Path *string `msgpack:"path"`
}

// FileInfoBody is the body of "file_info". Mode is in Go os.FileMode bit
// layout (the server tests IsRegular on it); the pointers follow the
// server's struct so that zero values (uid 0) are still sent.
type FileInfoBody struct {
	Path    *string    `msgpack:"path"`
	Size    *int64     `msgpack:"size,omitempty"`
	UID     *uint32    `msgpack:"uid,omitempty"`
	GID     *uint32    `msgpack:"gid,omitempty"`
	Mode    *uint32    `msgpack:"mode,omitempty"`
	ModTime *time.Time `msgpack:"modtime,omitempty"`
}

// UploadBody is the body of "put_file". Mode is what the server parsed
// from the multipart "mode" field as octal text: POSIX bits (04000 is
// setuid), although a Go client may send os.FileMode bits.
type UploadBody struct {
	SrcPath *string    `msgpack:"src_path,omitempty"`
	Path    *string    `msgpack:"path"`
	Size    *int64     `msgpack:"size,omitempty"`
	UID     *uint32    `msgpack:"uid,omitempty"`
	GID     *uint32    `msgpack:"gid,omitempty"`
	Mode    *uint32    `msgpack:"mode,omitempty"`
	ModTime *time.Time `msgpack:"modtime,omitempty"`
}
