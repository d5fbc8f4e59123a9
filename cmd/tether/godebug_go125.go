//go:build go1.25

// Go 1.25's crypto defaults; see godebug_go124.go.

//go:debug tlssha1=0
//go:debug x509sha256skid=1

package main
