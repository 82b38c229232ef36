package files

import (
	"errors"
	"io/fs"
	"os"
	"path/filepath"

	"github.com/casarerpa/casare/agent/step"
)

// maxLinks bounds how many symbolic links one path may pass through, as the
// kernel does, so a loop of links is an error rather than a hang.
const maxLinks = 255

// Resolve turns a path a workflow wrote into the real absolute path a step
// may touch. A relative path is taken from env.WorkDir. The result, with
// every symbolic link of its existing part followed, must lie within
// env.WorkDir or one of env.Roots; otherwise Resolve returns a business
// error saying the path is outside them. The path need not exist, so that
// steps can create files.
func Resolve(env *step.Env, p string) (string, error) {
	if p == "" {
		return "", step.Businessf("the path is empty")
	}
	if env == nil || env.WorkDir == "" {
		return "", step.Failf("the job has no work directory to resolve %s in", p)
	}
	abs := p
	if !filepath.IsAbs(abs) {
		abs = filepath.Join(env.WorkDir, abs)
	}
	real, err := realPath(filepath.Clean(abs), 0)
	if err != nil {
		return "", step.Failf("resolve %s: %w", p, err)
	}
	if !allowed(env, real) {
		return "", outside(p)
	}
	return real, nil
}

// resolveEntry resolves p for steps that act on the directory entry itself
// (delete, move) rather than on what a link there points to: the links of
// its parent are followed, its last element is not. Removing a link inside
// the work directory is harmless even when it points outside. The work
// directory and the roots themselves are refused, since no step should
// remove or move them away.
func resolveEntry(env *step.Env, param, p string) (string, error) {
	if p == "" {
		return "", step.Businessf("with.%s: the path is empty", param)
	}
	if env == nil || env.WorkDir == "" {
		return "", step.Failf("the job has no work directory to resolve %s in", p)
	}
	abs := p
	if !filepath.IsAbs(abs) {
		abs = filepath.Join(env.WorkDir, abs)
	}
	abs = filepath.Clean(abs)
	parent, err := realPath(filepath.Dir(abs), 0)
	if err != nil {
		return "", step.Failf("resolve %s: %w", p, err)
	}
	entry := filepath.Join(parent, filepath.Base(abs))
	for _, root := range roots(env) {
		if entry == root {
			return "", step.Businessf("with.%s: %s is the job's work directory or an allowed root", param, p)
		}
	}
	if !allowed(env, entry) {
		return "", step.Businessf("with.%s: %s", param, outside(p).Error())
	}
	return entry, nil
}

func outside(p string) error {
	return step.Businessf("%s is outside the job's work directory and the allowed roots", p)
}

// roots lists the real paths of the work directory and the allowed roots.
func roots(env *step.Env) []string {
	var out []string
	for _, root := range append([]string{env.WorkDir}, env.Roots...) {
		if root == "" {
			continue
		}
		if real, err := realPath(filepath.Clean(root), 0); err == nil {
			out = append(out, real)
		}
	}
	return out
}

// allowed reports whether the real path p lies within one of the roots.
func allowed(env *step.Env, p string) bool {
	for _, root := range roots(env) {
		if within(root, p) {
			return true
		}
	}
	return false
}

// ResolveParam is Resolve for the parameter named param, whose errors name
// it the way every bad parameter is named: "with.path: ...".
func ResolveParam(env *step.Env, param, p string) (string, error) {
	real, err := Resolve(env, p)
	if err == nil {
		return real, nil
	}
	var se *step.Error
	if errors.As(err, &se) {
		return "", &step.Error{Message: "with." + param + ": " + se.Message, Business: se.Business, Err: se.Err}
	}
	return "", err
}

// within reports whether p is root or lies below it; both are clean and
// absolute.
func within(root, p string) bool {
	rel, err := filepath.Rel(root, p)
	return err == nil && (rel == "." || filepath.IsLocal(rel))
}

// realPath follows the symbolic links of the part of p that exists. The
// missing rest is appended unchanged, which is safe because nothing there
// can be a link yet. A dangling link is followed to where it points, since
// writing through it would create its target.
func realPath(p string, links int) (string, error) {
	if links > maxLinks {
		return "", errors.New("too many levels of symbolic links")
	}
	if real, err := filepath.EvalSymlinks(p); err == nil {
		return real, nil
	}
	info, err := os.Lstat(p)
	if err == nil && info.Mode()&fs.ModeSymlink != 0 {
		target, err := os.Readlink(p)
		if err != nil {
			return "", err
		}
		if !filepath.IsAbs(target) {
			target = filepath.Join(filepath.Dir(p), target)
		}
		return realPath(filepath.Clean(target), links+1)
	}
	parent := filepath.Dir(p)
	if parent == p {
		return p, nil
	}
	realParent, err := realPath(parent, links)
	if err != nil {
		return "", err
	}
	return filepath.Join(realParent, filepath.Base(p)), nil
}
