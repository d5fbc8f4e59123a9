package shell

import (
	"bytes"
	"os"
	"strconv"
	"syscall"
)

// procEntry is the part of /proc/<pid>/stat the teardown needs.
type procEntry struct {
	pid, ppid, session int
	zombie             bool
}

// parseStat parses /proc/<pid>/stat; the command name may hold spaces and
// parentheses, so fields are counted from the last ')'.
func parseStat(b []byte) (procEntry, bool) {
	open := bytes.IndexByte(b, '(')
	closeIdx := bytes.LastIndexByte(b, ')')
	if open < 1 || closeIdx < open {
		return procEntry{}, false
	}
	pid, err := strconv.Atoi(string(bytes.TrimSpace(b[:open])))
	if err != nil {
		return procEntry{}, false
	}
	f := bytes.Fields(b[closeIdx+1:])
	// state ppid pgrp session
	if len(f) < 4 {
		return procEntry{}, false
	}
	ppid, err1 := strconv.Atoi(string(f[1]))
	sess, err2 := strconv.Atoi(string(f[3]))
	if err1 != nil || err2 != nil {
		return procEntry{}, false
	}
	return procEntry{pid: pid, ppid: ppid, session: sess, zombie: len(f[0]) == 1 && f[0][0] == 'Z'}, true
}

// scanProcs lists processes for which keep returns true.
func scanProcs(keep func(procEntry) bool) []procEntry {
	d, err := os.Open("/proc")
	if err != nil {
		return nil
	}
	defer d.Close()
	names, err := d.Readdirnames(-1)
	if err != nil {
		return nil
	}
	var out []procEntry
	for _, n := range names {
		if n[0] < '0' || n[0] > '9' {
			continue
		}
		b, err := os.ReadFile("/proc/" + n + "/stat")
		if err != nil {
			continue // gone meanwhile
		}
		if e, ok := parseStat(b); ok && keep(e) {
			out = append(out, e)
		}
	}
	return out
}

// SessionMembers returns the live (non-zombie) processes of the terminal
// session led by sid.
func SessionMembers(sid int) []int {
	var pids []int
	for _, e := range scanProcs(func(e procEntry) bool { return e.session == sid && !e.zombie }) {
		pids = append(pids, e.pid)
	}
	return pids
}

// signalSession sends sig to every live process of session sid, including
// jobs that an interactive shell moved into process groups of their own.
func signalSession(sid int, sig syscall.Signal) int {
	pids := SessionMembers(sid)
	for _, p := range pids {
		_ = syscall.Kill(p, sig)
	}
	return len(pids)
}
