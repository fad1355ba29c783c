package shim

import (
	"debug/buildinfo"
	"runtime/debug"
	"strings"
)

// Binary is the file name of the shim's own binary (cmd/skiff-shim). The
// worker runs it for its containers when it lies beside the worker's
// binary and is of the same build (SameBuild).
const Binary = "skiff-shim"

// VersionArg makes skiff-shim print its build (BuildOf) and exit.
const VersionArg = "version"

// BuildOf identifies a build: the module version and the version-control
// revision Go recorded, and the -ldflags it was built with (the Makefile's
// version). skiff and skiff-shim built together from one checkout have the
// same; binaries built without version-control information have only the
// module version, "(devel)" for a local build.
func BuildOf(bi *debug.BuildInfo) string {
	parts := []string{bi.Main.Version}
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision", "vcs.time", "vcs.modified", "-ldflags":
			parts = append(parts, s.Key+"="+s.Value)
		}
	}
	return strings.Join(parts, " ")
}

// Build is BuildOf the running binary.
func Build() string {
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return ""
	}
	return BuildOf(bi)
}

// SameBuild reports whether the executables a and b were built together
// (BuildOf agrees), reading what Go recorded in each file.
func SameBuild(a, b string) bool {
	ba, err := buildinfo.ReadFile(a)
	if err != nil {
		return false
	}
	bb, err := buildinfo.ReadFile(b)
	return err == nil && BuildOf(ba) == BuildOf(bb)
}
