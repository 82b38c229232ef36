package files

import (
	"context"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"

	"github.com/casarerpa/casare/agent/step"
)

type copyParams struct {
	From      string `json:"from" step:"required" doc:"File to copy."`
	To        string `json:"to" step:"required" doc:"Where to put the copy: a file path, or an existing directory to copy into under the same name. Missing parent directories are created."`
	Overwrite bool   `json:"overwrite" doc:"Replace the destination if it exists; without it an existing destination is an error."`
}

var copyAction = step.Define("file.copy", "Copies a file.",
	func(_ context.Context, env *step.Env, p copyParams) (pathOutputs, error) {
		from, to, info, err := fromTo(env, p.From, p.To, p.Overwrite, func(env *step.Env, p string) (string, error) {
			return ResolveParam(env, "from", p)
		})
		if err != nil {
			return pathOutputs{}, err
		}
		if info.IsDir() {
			return pathOutputs{}, step.Businessf("with.from: %s is a directory; file.copy copies files", p.From)
		}
		if err := copyFile(from, to, info.Mode().Perm()); err != nil {
			return pathOutputs{}, step.Failf("copy %s to %s: %w", p.From, p.To, err)
		}
		return pathOutputs{Path: to, Size: info.Size()}, nil
	},
	step.Rejects("a path is outside the job's work directory and the allowed roots"),
	step.Rejects("from does not exist or is a directory"),
	step.Rejects("to exists and overwrite is not set"),
	step.Fails("the file cannot be copied"))

type moveParams struct {
	From      string `json:"from" step:"required" doc:"File or directory to move."`
	To        string `json:"to" step:"required" doc:"New path, or an existing directory to move into under the same name. Missing parent directories are created."`
	Overwrite bool   `json:"overwrite" doc:"Replace a destination file if it exists; without it an existing destination is an error."`
}

var moveAction = step.Define("file.move", "Moves or renames a file or directory.",
	func(_ context.Context, env *step.Env, p moveParams) (pathOutputs, error) {
		from, to, info, err := fromTo(env, p.From, p.To, p.Overwrite, func(env *step.Env, p string) (string, error) {
			return resolveEntry(env, "from", p)
		})
		if err != nil {
			return pathOutputs{}, err
		}
		err = os.Rename(from, to)
		if errors.Is(err, syscall.EXDEV) && info.Mode().IsRegular() {
			// Another file system: rename cannot carry the file there.
			if err = copyFile(from, to, info.Mode().Perm()); err == nil {
				err = os.Remove(from)
			}
		}
		if err != nil {
			return pathOutputs{}, step.Failf("move %s to %s: %w", p.From, p.To, err)
		}
		out := pathOutputs{Path: to}
		if !info.IsDir() {
			out.Size = info.Size()
		}
		return out, nil
	},
	step.Rejects("a path is outside the job's work directory and the allowed roots"),
	step.Rejects("from does not exist"),
	step.Rejects("to exists and overwrite is not set, or is a directory"),
	step.Fails("the file cannot be moved"))

// fromTo resolves the two paths of a copy or move and checks the
// destination: an existing directory receives the source under its own
// name, an existing file only with overwrite.
func fromTo(env *step.Env, fromPath, toPath string, overwrite bool, resolveFrom func(*step.Env, string) (string, error)) (from, to string, info fs.FileInfo, err error) {
	if from, err = resolveFrom(env, fromPath); err != nil {
		return "", "", nil, err
	}
	if info, err = os.Lstat(from); err != nil {
		return "", "", nil, statProblem("from", fromPath, err)
	}
	if to, err = ResolveParam(env, "to", toPath); err != nil {
		return "", "", nil, err
	}
	if dest, err := os.Stat(to); err == nil && dest.IsDir() {
		if to, err = ResolveParam(env, "to", filepath.Join(to, filepath.Base(filepath.Clean(fromPath)))); err != nil {
			return "", "", nil, err
		}
	}
	if to == from {
		return "", "", nil, step.Businessf("with.to: %s is the same file as with.from", toPath)
	}
	dest, err := os.Stat(to)
	switch {
	case err == nil && dest.IsDir():
		return "", "", nil, step.Businessf("with.to: %s is a directory", to)
	case err == nil && !overwrite:
		return "", "", nil, step.Businessf("with.to: %s already exists; set overwrite: true to replace it", to)
	case err != nil && !errors.Is(err, fs.ErrNotExist):
		return "", "", nil, statProblem("to", toPath, err)
	}
	if err := os.MkdirAll(filepath.Dir(to), 0o755); err != nil {
		return "", "", nil, mkdirProblem("to", toPath, err)
	}
	return from, to, info, nil
}

func copyFile(from, to string, mode fs.FileMode) error {
	src, err := os.Open(from)
	if err != nil {
		return err
	}
	defer src.Close()
	return WriteAtomic(to, mode, func(w io.Writer) error {
		_, err := io.Copy(w, src)
		return err
	})
}

type deleteParams struct {
	Path      string `json:"path" step:"required" doc:"File or directory to delete. A symbolic link is removed itself, never what it points to."`
	Recursive bool   `json:"recursive" doc:"Delete a directory with everything in it; without it only an empty directory is deleted."`
	MissingOK bool   `json:"missing_ok" doc:"Succeed when the path does not exist; without it a missing path is an error."`
}

type deleteOutputs struct {
	Deleted bool `json:"deleted" doc:"Whether something was deleted (false only with missing_ok)."`
}

var deleteAction = step.Define("file.delete", "Deletes a file, or a directory with recursive.",
	func(_ context.Context, env *step.Env, p deleteParams) (deleteOutputs, error) {
		path, err := resolveEntry(env, "path", p.Path)
		if err != nil {
			return deleteOutputs{}, err
		}
		info, err := os.Lstat(path)
		if err != nil {
			if p.MissingOK && errors.Is(err, fs.ErrNotExist) {
				return deleteOutputs{}, nil
			}
			return deleteOutputs{}, statProblem("path", p.Path, err)
		}
		if info.IsDir() && !p.Recursive {
			entries, err := os.ReadDir(path)
			if err != nil {
				return deleteOutputs{}, step.Failf("delete %s: %w", p.Path, err)
			}
			if len(entries) > 0 {
				return deleteOutputs{}, step.Businessf("with.path: %s is a directory that is not empty; set recursive: true to delete it with its content", p.Path)
			}
		}
		if info.IsDir() {
			err = os.RemoveAll(path)
		} else {
			err = os.Remove(path)
		}
		if err != nil {
			return deleteOutputs{}, step.Failf("delete %s: %w", p.Path, err)
		}
		return deleteOutputs{Deleted: true}, nil
	},
	step.Rejects("the path is outside the job's work directory and the allowed roots, or is the work directory itself"),
	step.Rejects("the path does not exist and missing_ok is not set"),
	step.Rejects("the path is a directory that is not empty and recursive is not set"),
	step.Fails("the path cannot be deleted"))

type existsParams struct {
	Path string `json:"path" step:"required" doc:"File or directory to look for."`
}

type existsOutputs struct {
	Exists bool `json:"exists" doc:"Whether the path exists."`
	IsDir  bool `json:"is_dir" doc:"Whether it is a directory."`
}

var existsAction = step.Define("file.exists", "Tells whether a file or directory exists.",
	func(_ context.Context, env *step.Env, p existsParams) (existsOutputs, error) {
		path, err := ResolveParam(env, "path", p.Path)
		if err != nil {
			return existsOutputs{}, err
		}
		info, err := os.Stat(path)
		switch {
		case err == nil:
			return existsOutputs{Exists: true, IsDir: info.IsDir()}, nil
		case errors.Is(err, fs.ErrNotExist), errors.Is(err, syscall.ENOTDIR):
			return existsOutputs{}, nil
		}
		return existsOutputs{}, step.Failf("with.path: %w", err)
	},
	step.Rejects("the path is outside the job's work directory and the allowed roots"),
	step.Fails("the path cannot be examined"))
