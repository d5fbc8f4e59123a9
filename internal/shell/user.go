package shell

import (
	"fmt"
	"os"
	"os/user"
	"strconv"
	"syscall"
)

// Account is what a shell needs to know about the user it runs as.
type Account struct {
	Name   string
	UID    uint32
	GID    uint32
	Groups []uint32
	Home   string
}

// LookupAccount resolves name through the same NSS files the shell itself
// will see (pure Go: /etc/passwd and /etc/group).
func LookupAccount(name string) (*Account, error) {
	u, err := user.Lookup(name)
	if err != nil {
		return nil, fmt.Errorf("look up user %q: %w", name, err)
	}
	uid, err := strconv.ParseUint(u.Uid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("user %q: uid %q: %w", name, u.Uid, err)
	}
	gid, err := strconv.ParseUint(u.Gid, 10, 32)
	if err != nil {
		return nil, fmt.Errorf("user %q: gid %q: %w", name, u.Gid, err)
	}
	ids, err := u.GroupIds()
	if err != nil {
		return nil, fmt.Errorf("user %q: supplementary groups: %w", name, err)
	}
	groups := make([]uint32, 0, len(ids))
	for _, s := range ids {
		g, err := strconv.ParseUint(s, 10, 32)
		if err != nil {
			return nil, fmt.Errorf("user %q: group id %q: %w", name, s, err)
		}
		groups = append(groups, uint32(g))
	}
	return &Account{Name: u.Username, UID: uint32(uid), GID: uint32(gid), Groups: groups, Home: u.HomeDir}, nil
}

// credential is the identity switch for the child, or nil when the daemon
// is not root and so cannot switch (the shell then runs as the daemon's
// own user, as upstream does).
func (a *Account) credential() *syscall.Credential {
	if os.Geteuid() != 0 {
		return nil
	}
	return &syscall.Credential{Uid: a.UID, Gid: a.GID, Groups: a.Groups, NoSetGroups: false}
}

// workDir is the home directory when it exists, otherwise "/".
func (a *Account) workDir() string {
	if a.Home != "" {
		if fi, err := os.Stat(a.Home); err == nil && fi.IsDir() {
			return a.Home
		}
	}
	return "/"
}
