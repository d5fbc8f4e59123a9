package config

import (
	"encoding/json"
	"fmt"
	"os"
)

// PermissionWarnings names the configuration files that hold a device
// token (Auth.Token) and that users other than their owner can read: the
// token lets anyone who reads it act as the device. Missing or unreadable
// files are not this check's business (Load reports them).
func PermissionWarnings(opts LoadOptions) []string {
	mainPath, fallbackPath := opts.paths()
	var out []string
	for _, p := range []string{fallbackPath, mainPath} {
		if w := tokenFileExposed(p); w != "" {
			out = append(out, w)
		}
	}
	return out
}

func tokenFileExposed(path string) string {
	fi, err := os.Stat(path)
	if err != nil || !fi.Mode().IsRegular() || fi.Mode().Perm()&0o044 == 0 {
		return ""
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return ""
	}
	// encoding/json matches keys case-insensitively, as Load does.
	var f struct{ Auth struct{ Token string } }
	if json.Unmarshal(b, &f) != nil || f.Auth.Token == "" {
		return ""
	}
	return fmt.Sprintf("%s holds Auth.Token and is readable by other users (mode %04o): chmod 0600 it, "+
		"or keep the token out of it (systemd LoadCredential= or a 0600 EnvironmentFile with %s_AUTH_TOKEN)",
		path, fi.Mode().Perm(), EnvPrefix)
}
