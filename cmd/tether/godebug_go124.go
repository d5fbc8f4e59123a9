//go:build go1.24

// go.mod says go 1.22 (the oldest toolchain a supported Yocto release
// ships), so a newer toolchain would build tether with Go 1.22's crypto
// defaults: 3DES suites offered, no post-quantum key exchange, and so on.
// These files restore the newer defaults for the toolchains that know
// them; a Go 1.22 or 1.23 build skips them (and ignores //go:debug
// anyway). Each file names only settings its toolchain knows: an unknown
// one is a build error.

//go:debug tls3des=0
//go:debug tlsmlkem=1
//go:debug rsa1024min=1
//go:debug x509negativeserial=0
//go:debug x509usepolicies=1
//go:debug x509keypairleaf=1
//go:debug x509rsacrt=1

package main
