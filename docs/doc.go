// Package docs holds no code: this directory is the project's
// documentation, and the package's tests keep it honest. Every relative
// link in the repository's markdown must lead to a file that exists and,
// for a #fragment, to a heading that exists; the configuration example in
// README.md must load.
package docs
