package logging

import (
	"strconv"
	"unicode/utf8"
)

// MaxPeerText is how many bytes of a string the server controls (a session
// or user id, an error text) a log line keeps. Real ids are 36-character
// UUIDs; anything much longer is an attack on the journal, and the first
// bytes are enough to correlate it.
const MaxPeerText = 128

// Clip cuts a peer-supplied string to MaxPeerText bytes, on a UTF-8
// boundary, and says how long it really was, so that a hostile server
// cannot push megabytes into the journal through one attribute.
func Clip(s string) string {
	if len(s) <= MaxPeerText {
		return s
	}
	cut := MaxPeerText
	for cut > 0 && !utf8.RuneStart(s[cut]) {
		cut--
	}
	return s[:cut] + "…(" + strconv.Itoa(len(s)) + " bytes)"
}
