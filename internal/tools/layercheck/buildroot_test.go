//go:build layercheck

package layercheck

import (
	"bufio"
	"bytes"
	"encoding/json"
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
)

func brDir(t *testing.T) string { return filepath.Join(repoRoot(t), "buildroot") }

func TestBuildrootExternalTree(t *testing.T) {
	dir := brDir(t)
	desc, err := os.ReadFile(filepath.Join(dir, "external.desc"))
	if err != nil {
		t.Fatal(err)
	}
	if !regexp.MustCompile(`(?m)^name: TETHER$`).Match(desc) || !regexp.MustCompile(`(?m)^desc: \S`).Match(desc) {
		t.Errorf("external.desc must have \"name: TETHER\" and a desc: line, has:\n%s", desc)
	}
	mk, err := os.ReadFile(filepath.Join(dir, "external.mk"))
	if err != nil {
		t.Fatal(err)
	}
	if !bytes.Contains(mk, []byte("$(BR2_EXTERNAL_TETHER_PATH)/package/*/*.mk")) {
		t.Error("external.mk must include $(BR2_EXTERNAL_TETHER_PATH)/package/*/*.mk")
	}
	for _, p := range []string{"Config.in", "package/tether/Config.in", "package/tether/tether.mk", "package/tether/tether.hash", "package/tether/S50tether", "README.md"} {
		if _, err := os.Stat(filepath.Join(dir, p)); err != nil {
			t.Error(err)
		}
	}
	// Buildroot's check-package wants init scripts in the package
	// directory non-executable (the .mk installs them 0755).
	if st, err := os.Stat(filepath.Join(dir, "package/tether/S50tether")); err == nil && st.Mode()&0o111 != 0 {
		t.Error("package/tether/S50tether must not be executable")
	}
}

// TestBuildrootKconfig loads Config.in with the kconfig parser (kconfig-conf
// from kconfig-frontends) under stand-ins for the Buildroot symbols it uses,
// applies each defconfig and checks what it enables.
func TestBuildrootKconfig(t *testing.T) {
	conf, err := exec.LookPath("kconfig-conf")
	if err != nil {
		t.Fatalf("kconfig-conf (Debian package kconfig-frontends-nox) is needed: %v", err)
	}
	dir := brDir(t)
	tmp := t.TempDir()
	// What Buildroot defines, reduced to the symbols the tree refers to.
	stub := `mainmenu "stand-in for Buildroot"
config BR2_EXTERNAL_TETHER_PATH
	string
	option env="BR2_EXTERNAL_TETHER_PATH"
config BR2_aarch64
	bool "aarch64"
config BR2_arm
	bool "arm"
config BR2_x86_64
	bool "x86_64"
config BR2_cortex_a9
	bool "cortex-a9"
config BR2_ARM_ENABLE_NEON
	bool "neon"
config BR2_ARM_ENABLE_VFP
	bool "vfp"
config BR2_USE_MMU
	bool
	default y
config BR2_PACKAGE_HOST_GO_TARGET_ARCH_SUPPORTS
	bool
	default y if BR2_aarch64 || BR2_arm || BR2_x86_64
config BR2_PACKAGE_HOST_GO
	bool "host go"
config BR2_PACKAGE_MENDER_CONNECT
	bool "mender-connect"
config BR2_TOOLCHAIN_BUILDROOT_GLIBC
	bool "glibc"
config BR2_INIT_SYSTEMD
	bool "systemd"
	depends on BR2_TOOLCHAIN_BUILDROOT_GLIBC
config BR2_PACKAGE_DBUS
	bool "dbus"
config BR2_TARGET_ROOTFS_EXT2_SIZE
	string "ext2 size"
source "$BR2_EXTERNAL_TETHER_PATH/Config.in"
`
	stubPath := filepath.Join(tmp, "Config.in")
	if err := os.WriteFile(stubPath, []byte(stub), 0o644); err != nil {
		t.Fatal(err)
	}
	defconfigs, err := filepath.Glob(filepath.Join(dir, "configs", "tether_*_defconfig"))
	if err != nil || len(defconfigs) != 3 {
		t.Fatalf("want the three tether_qemu_*_defconfig files, found %v (%v)", defconfigs, err)
	}
	for _, dc := range defconfigs {
		t.Run(filepath.Base(dc), func(t *testing.T) {
			// Only the symbols the stand-in knows; the others are Buildroot's.
			var known bytes.Buffer
			f, err := os.Open(dc)
			if err != nil {
				t.Fatal(err)
			}
			defer f.Close()
			sc := bufio.NewScanner(f)
			for sc.Scan() {
				line := sc.Text()
				name, _, _ := strings.Cut(line, "=")
				if strings.Contains(stub, "config "+name+"\n") || strings.HasPrefix(name, "BR2_PACKAGE_TETHER") {
					known.WriteString(line + "\n")
				}
			}
			in := filepath.Join(t.TempDir(), "defconfig")
			if err := os.WriteFile(in, known.Bytes(), 0o644); err != nil {
				t.Fatal(err)
			}
			out := filepath.Join(t.TempDir(), ".config")
			cmd := exec.Command(conf, "--defconfig="+in, stubPath)
			cmd.Env = append(os.Environ(), "BR2_EXTERNAL_TETHER_PATH="+dir, "KCONFIG_CONFIG="+out, "CONFIG_=") // Buildroot symbols carry no CONFIG_ prefix
			if outp, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("kconfig-conf: %v\n%s", err, outp)
			}
			got, err := os.ReadFile(out)
			if err != nil {
				t.Fatal(err)
			}
			for _, want := range []string{"BR2_PACKAGE_TETHER=y", "BR2_PACKAGE_HOST_GO=y", "BR2_INIT_SYSTEMD=y", "BR2_PACKAGE_DBUS=y", "BR2_TOOLCHAIN_BUILDROOT_GLIBC=y", "BR2_PACKAGE_TETHER_METRICS=y", `BR2_PACKAGE_TETHER_USER="tether-shell"`} {
				if !bytes.Contains(got, []byte("\n"+want+"\n")) {
					t.Errorf("%s does not end up with %s", filepath.Base(dc), want)
				}
			}
		})
	}
	// Config.in must keep to what a static pure-Go binary needs.
	cfg, err := os.ReadFile(filepath.Join(dir, "package", "tether", "Config.in"))
	if err != nil {
		t.Fatal(err)
	}
	for _, bad := range []string{"CGO_LINKING", "GLIB", "BR2_TOOLCHAIN_HAS_THREADS"} {
		if bytes.Contains(cfg, []byte(bad)) {
			t.Errorf("package/tether/Config.in mentions %s: a static pure-Go binary needs no such dependency", bad)
		}
	}
}

// brVars evaluates tether.mk with GNU make under a stand-in for Buildroot's
// helpers and returns the variables the build uses.
func brVars(t *testing.T, config map[string]string) map[string]string {
	t.Helper()
	dir := brDir(t)
	var b strings.Builder
	b.WriteString("empty :=\nspace := $(empty) $(empty)\ncomma := ,\nqstrip = $(strip $(subst \",,$(1)))\n")
	b.WriteString("golang-package = $(empty)\n")
	for k, v := range config {
		fmt.Fprintf(&b, "%s = %s\n", k, v)
	}
	fmt.Fprintf(&b, "include %s\n", filepath.Join(dir, "package", "tether", "tether.mk"))
	vars := []string{"TETHER_VERSION", "TETHER_SITE", "TETHER_SITE_METHOD", "TETHER_LICENSE", "TETHER_LICENSE_FILES", "TETHER_GOMOD", "TETHER_BUILD_TARGETS", "TETHER_GO_ENV", "TETHER_LDFLAGS", "TETHER_TAGS", "TETHER_CONF"}
	b.WriteString("$(info BEGIN)\n")
	for _, v := range vars {
		fmt.Fprintf(&b, "$(info %s=$(subst $(newline),\\n,$(%s)))\n", v, v)
	}
	b.WriteString("all:\n\t@:\n")
	text := "define newline\n\n\nendef\n" + b.String()
	mk := filepath.Join(t.TempDir(), "stub.mk")
	if err := os.WriteFile(mk, []byte(text), 0o644); err != nil {
		t.Fatal(err)
	}
	out, err := exec.Command("make", "--no-print-directory", "-s", "-f", mk, "all").CombinedOutput()
	if err != nil {
		t.Fatalf("make with tether.mk: %v\n%s", err, out)
	}
	res := map[string]string{}
	_, after, ok := strings.Cut(string(out), "BEGIN\n")
	if !ok {
		t.Fatalf("make output: %s", out)
	}
	for _, line := range strings.Split(strings.TrimSpace(after), "\n") {
		k, v, _ := strings.Cut(line, "=")
		res[k] = strings.ReplaceAll(v, `\n`, "\n")
	}
	return res
}

func defaultBRConfig() map[string]string {
	return map[string]string{
		"BR2_PACKAGE_TETHER":                 "y",
		"BR2_PACKAGE_TETHER_VERSION":         `"v0.0.0-test"`,
		"BR2_PACKAGE_TETHER_METRICS":         "y",
		"BR2_PACKAGE_TETHER_USER":            `"tether-shell"`,
		"BR2_PACKAGE_TETHER_SHELL":           `"/bin/sh"`,
		"BR2_PACKAGE_TETHER_SHELL_ARGUMENTS": `"--login"`,
	}
}

func TestBuildrootPackage(t *testing.T) {
	v := brVars(t, defaultBRConfig())
	want := map[string]string{
		"TETHER_VERSION":       "v0.0.0-test",
		"TETHER_SITE":          "https://github.com/tether-agent/tether.git",
		"TETHER_SITE_METHOD":   "git",
		"TETHER_GOMOD":         modulePath,
		"TETHER_BUILD_TARGETS": "cmd/tether",
		"TETHER_GO_ENV":        "CGO_ENABLED=0",
		"TETHER_TAGS":          "",
	}
	for k, w := range want {
		if strings.TrimSpace(v[k]) != w {
			t.Errorf("%s = %q, want %q", k, v[k], w)
		}
	}
	if !strings.Contains(v["TETHER_LDFLAGS"], "-X "+modulePath+"/internal/version.Version=v0.0.0-test") {
		t.Errorf("TETHER_LDFLAGS = %q does not stamp the version", v["TETHER_LDFLAGS"])
	}
	off := defaultBRConfig()
	delete(off, "BR2_PACKAGE_TETHER_METRICS")
	if tags := strings.TrimSpace(brVars(t, off)["TETHER_TAGS"]); tags != "nometrics" {
		t.Errorf("metrics off: TETHER_TAGS = %q, want nometrics", tags)
	}

	// The generated licence block follows the module list of the layer.
	_, entries, err := ParseLicensesInc(filepath.Join(recipeDir(t), "tether-licenses.inc"))
	if err != nil {
		t.Fatal(err)
	}
	block, files, err := BuildrootLicenseBlock(entries)
	if err != nil {
		t.Fatal(err)
	}
	mkPath := filepath.Join(brDir(t), "package", "tether", "tether.mk")
	mk, err := os.ReadFile(mkPath)
	if err != nil {
		t.Fatal(err)
	}
	fresh, err := ReplaceGenerated(string(mk), block)
	if err != nil {
		t.Fatalf("%s: %v", mkPath, err)
	}
	hashPath := filepath.Join(brDir(t), "package", "tether", "tether.hash")
	hash, err := brHashFile(t, files)
	if err != nil {
		t.Fatal(err)
	}
	if *update {
		if err := os.WriteFile(mkPath, []byte(fresh), 0o644); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(hashPath, []byte(hash), 0o644); err != nil {
			t.Fatal(err)
		}
		mk = []byte(fresh)
	}
	if string(mk) != fresh {
		t.Errorf("%s: the generated licence block is stale; run `make layers-update`", mkPath)
	}
	got, err := os.ReadFile(hashPath)
	if err != nil {
		t.Fatal(err)
	}
	if string(got) != hash {
		t.Errorf("%s is stale; run `make layers-update`. want:\n%s", hashPath, hash)
	}
	// Hash file format, as Buildroot's check-package reads it.
	line := regexp.MustCompile(`^sha256  [0-9a-f]{64}  [^ ]+$`)
	for i, l := range strings.Split(strings.TrimSuffix(string(got), "\n"), "\n") {
		if l != "" && !strings.HasPrefix(l, "#") && !line.MatchString(l) {
			t.Errorf("tether.hash:%d: %q is not \"sha256  <hash>  <file>\"", i+1, l)
		}
	}
}

// brHashFile is tether.hash: the licence files' sha256, taken from the
// repository (tether's LICENSE) and the module cache (vendored ones).
func brHashFile(t *testing.T, files []string) (string, error) {
	root := repoRoot(t)
	user, err := UserModCache(root)
	if err != nil {
		return "", err
	}
	_, entries, err := ParseLicensesInc(filepath.Join(recipeDir(t), "tether-licenses.inc"))
	if err != nil {
		return "", err
	}
	src := map[string]string{"LICENSE": filepath.Join(root, "LICENSE")}
	re := regexp.MustCompile(`^pkg/mod/(.+)@[^/]+/(.+)$`)
	for _, e := range entries {
		m := re.FindStringSubmatch(e.Path)
		src["vendor/"+UnescapeModulePath(m[1])+"/"+m[2]] = filepath.Join(user, strings.TrimPrefix(e.Path, "pkg/mod/"))
	}
	var b strings.Builder
	b.WriteString("# Locally computed (make layers-update). The download itself has no\n")
	b.WriteString("# hash here: it depends on BR2_PACKAGE_TETHER_VERSION; add\n")
	b.WriteString("# \"sha256  <hash>  tether-<version>-go2.tar.gz\" when pinning a release.\n")
	for _, f := range files {
		sum, err := SHA256File(src[f])
		if err != nil {
			return "", fmt.Errorf("%s: %w", f, err)
		}
		fmt.Fprintf(&b, "sha256  %s  %s\n", sum, f)
	}
	return b.String(), nil
}

// TestBuildrootStaticBuild vendors the modules as the download step does,
// builds with the command line of pkg-golang.mk for the three qemu
// defconfigs' architectures, offline, checks the ELF, and checks the
// vendored licence files and the generated configuration.
func TestBuildrootStaticBuild(t *testing.T) {
	root := repoRoot(t)
	src := t.TempDir()
	// A copy of the source tree as the download would have it.
	ls, err := exec.Command("git", "-C", root, "ls-files", "-co", "--exclude-standard").Output()
	if err != nil {
		t.Fatalf("git ls-files: %v", err)
	}
	for _, f := range strings.Split(strings.TrimSpace(string(ls)), "\n") {
		data, err := os.ReadFile(filepath.Join(root, f))
		if err != nil {
			continue // deleted in the work tree
		}
		p := filepath.Join(src, f)
		if err := os.MkdirAll(filepath.Dir(p), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(p, data, 0o644); err != nil {
			t.Fatal(err)
		}
	}
	user, err := UserModCache(root)
	if err != nil {
		t.Fatal(err)
	}
	vendor := exec.Command("go", "mod", "vendor")
	vendor.Dir = src
	vendor.Env = GoEnv("GOMODCACHE="+user, "GOPROXY=off")
	if out, err := vendor.CombinedOutput(); err != nil {
		t.Fatalf("go mod vendor: %v\n%s", err, out)
	}
	v := brVars(t, defaultBRConfig())
	for _, f := range strings.Fields(v["TETHER_LICENSE_FILES"]) {
		if f == "\\" {
			continue
		}
		if _, err := os.Stat(filepath.Join(src, f)); err != nil {
			t.Errorf("TETHER_LICENSE_FILES: %v", err)
		}
	}

	empty := t.TempDir() // no module cache at all: everything comes from vendor/
	archs := []struct{ name, goarch, goarm string }{
		{"qemu_aarch64_virt", "arm64", ""},
		{"qemu_arm_vexpress", "arm", "7"}, // cortex-a9: BR2_ARM_CPU_ARMV7A
		{"qemu_x86_64", "amd64", ""},
	}
	for _, a := range archs {
		t.Run(a.name, func(t *testing.T) {
			ldflags := v["TETHER_LDFLAGS"]
			if a.goarch == "arm64" {
				ldflags += " -extldflags '-fuse-ld=bfd'" // what pkg-golang.mk adds on aarch64
			}
			bin := filepath.Join(t.TempDir(), "tether")
			args := PkgGolangBuildArgs(strings.TrimSpace(ldflags), strings.TrimSpace(v["TETHER_TAGS"]), bin, v["TETHER_GOMOD"]+"/"+v["TETHER_BUILD_TARGETS"])
			cmd := exec.Command("go", args...)
			cmd.Dir = src
			env := []string{"GOFLAGS=-mod=vendor", "GOPROXY=off", "GOMODCACHE=" + empty, "GOARCH=" + a.goarch, "CGO_ENABLED=1"}
			if a.goarm != "" {
				env = append(env, "GOARM="+a.goarm)
			}
			// TETHER_GO_ENV comes after HOST_GO_TARGET_ENV's CGO_ENABLED.
			env = append(env, strings.Fields(v["TETHER_GO_ENV"])...)
			cmd.Env = GoEnv(env...)
			if out, err := cmd.CombinedOutput(); err != nil {
				t.Fatalf("go %s: %v\n%s", strings.Join(args, " "), err, out)
			}
			if err := CheckStaticExec(bin, elfMachine[a.goarch]); err != nil {
				t.Error(err)
			}
			if a.goarch == "amd64" {
				conf := filepath.Join(t.TempDir(), "tether.conf")
				if err := os.WriteFile(conf, []byte(v["TETHER_CONF"]), 0o600); err != nil {
					t.Fatal(err)
				}
				var parsed map[string]any
				if err := json.Unmarshal([]byte(v["TETHER_CONF"]), &parsed); err != nil {
					t.Fatalf("TETHER_CONF is not JSON: %v\n%s", err, v["TETHER_CONF"])
				}
				out, err := exec.Command(bin, "-c", conf, "-b", filepath.Join(t.TempDir(), "none.conf"), "check-config").CombinedOutput()
				if err != nil {
					t.Errorf("tether check-config on the generated configuration: %v\n%s", err, out)
				}
			}
		})
	}
}

func TestBuildrootInitScript(t *testing.T) {
	p := filepath.Join(brDir(t), "package", "tether", "S50tether")
	if out, err := exec.Command("sh", "-n", p).CombinedOutput(); err != nil {
		t.Fatalf("sh -n %s: %v\n%s", p, err, out)
	}
	data, err := os.ReadFile(p)
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{`DAEMON="tether"`, `PIDFILE="/var/run/$DAEMON.pid"`, "-- $TETHER_ARGS daemon", "--exec \"/usr/bin/$DAEMON\""} {
		if !bytes.Contains(data, []byte(want)) {
			t.Errorf("S50tether lacks %q", want)
		}
	}
	for i, l := range strings.Split(string(data), "\n") {
		if regexp.MustCompile(`^\t* `).MatchString(l) && strings.TrimSpace(l) != "" {
			t.Errorf("S50tether:%d: indent with tabs (Buildroot's check-package)", i+1)
		}
	}
}
