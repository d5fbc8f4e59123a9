//go:build go1.26

// Go 1.26's crypto defaults; see godebug_go124.go.

//go:debug tlssecpmlkem=1
//go:debug cryptocustomrand=0

package main
