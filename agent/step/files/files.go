// Package files holds the file.* steps: read, write, list, copy, move,
// delete and exists. Every path is confined to the job's work directory and
// the roots the robot's configuration allows (see Resolve), with symbolic
// links followed before the check, so a workflow cannot reach /etc/passwd
// by writing ../../etc/passwd or through a link it planted. The sheets and
// shell families reuse Resolve for their paths.
package files

import (
	"context"
	"encoding/base64"
	"errors"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"syscall"
	"unicode/utf8"

	"github.com/casarerpa/casare/agent/step"
)

// MaxRead is the largest file file.read loads: its content travels in the
// job's outputs, which are no place for bigger files.
const MaxRead = 32 << 20

// Actions returns the file.* steps.
func Actions() []*step.Action {
	return []*step.Action{readAction, writeAction, listAction, copyAction, moveAction, deleteAction, existsAction}
}

const (
	encodingText   = "text"
	encodingBase64 = "base64"
)

type readParams struct {
	Path     string `json:"path" step:"required" doc:"File to read, relative to the job's work directory or absolute within an allowed root."`
	Encoding string `json:"encoding" doc:"text (default) returns the content as UTF-8 text; base64 returns any bytes encoded in base64."`
}

type readOutputs struct {
	Content string `json:"content" doc:"The file's content, as text or base64."`
	Size    int64  `json:"size" doc:"The file's size in bytes."`
}

var readAction = step.Define("file.read", "Reads a file's content as text or base64.",
	func(_ context.Context, env *step.Env, p readParams) (readOutputs, error) {
		if err := checkEncoding(p.Encoding); err != nil {
			return readOutputs{}, err
		}
		path, err := ResolveParam(env, "path", p.Path)
		if err != nil {
			return readOutputs{}, err
		}
		info, err := os.Stat(path)
		if err != nil {
			return readOutputs{}, statProblem("path", p.Path, err)
		}
		if info.IsDir() {
			return readOutputs{}, step.Businessf("with.path: %s is a directory, not a file", p.Path)
		}
		if info.Size() > MaxRead {
			return readOutputs{}, step.Businessf("with.path: %s is %d bytes, more than file.read loads (%d)", p.Path, info.Size(), MaxRead)
		}
		data, err := os.ReadFile(path)
		if err != nil {
			return readOutputs{}, step.Failf("read %s: %w", p.Path, err)
		}
		if p.Encoding == encodingBase64 {
			return readOutputs{Content: base64.StdEncoding.EncodeToString(data), Size: int64(len(data))}, nil
		}
		if !utf8.Valid(data) {
			return readOutputs{}, step.Businessf("with.path: %s is not UTF-8 text; read it with encoding: base64", p.Path)
		}
		return readOutputs{Content: string(data), Size: int64(len(data))}, nil
	},
	step.Rejects("the path is outside the job's work directory and the allowed roots"),
	step.Rejects("the file does not exist or is a directory"),
	step.Rejects("the file is larger than 32 MiB"),
	step.Rejects("the content is not UTF-8 text and encoding is text"),
	step.Fails("the file cannot be read"))

type writeParams struct {
	Path     string `json:"path" step:"required" doc:"File to write; missing parent directories are created."`
	Content  string `json:"content" doc:"What to write, as text or base64 according to encoding."`
	Encoding string `json:"encoding" doc:"text (default) writes content as is; base64 decodes it first, for binary files."`
	Append   bool   `json:"append" doc:"Add to the end of an existing file instead of replacing it."`
}

type pathOutputs struct {
	Path string `json:"path" doc:"The absolute path of the file."`
	Size int64  `json:"size" doc:"The file's size in bytes afterwards."`
}

var writeAction = step.Define("file.write", "Writes text or base64 content to a file, replacing or appending.",
	func(_ context.Context, env *step.Env, p writeParams) (pathOutputs, error) {
		if err := checkEncoding(p.Encoding); err != nil {
			return pathOutputs{}, err
		}
		data := []byte(p.Content)
		if p.Encoding == encodingBase64 {
			var err error
			if data, err = base64.StdEncoding.DecodeString(p.Content); err != nil {
				return pathOutputs{}, step.Businessf("with.content: not base64: %v", err)
			}
		}
		path, err := ResolveParam(env, "path", p.Path)
		if err != nil {
			return pathOutputs{}, err
		}
		if info, err := os.Stat(path); err == nil && info.IsDir() {
			return pathOutputs{}, step.Businessf("with.path: %s is a directory", p.Path)
		}
		if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
			return pathOutputs{}, mkdirProblem("path", p.Path, err)
		}
		if p.Append {
			err = appendFile(path, data)
		} else {
			err = WriteFileAtomic(path, data, 0o644)
		}
		if err != nil {
			return pathOutputs{}, step.Failf("write %s: %w", p.Path, err)
		}
		info, err := os.Stat(path)
		if err != nil {
			return pathOutputs{}, step.Failf("write %s: %w", p.Path, err)
		}
		return pathOutputs{Path: path, Size: info.Size()}, nil
	},
	step.Rejects("the path is outside the job's work directory and the allowed roots"),
	step.Rejects("the path is a directory, or a parent of it is a file"),
	step.Rejects("encoding is base64 and the content is not"),
	step.Fails("the file cannot be written"))

func appendFile(path string, data []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o644)
	if err != nil {
		return err
	}
	_, err = f.Write(data)
	return errors.Join(err, f.Close())
}

// WriteFileAtomic writes data to a temporary file beside path and renames it
// into place, so a reader (or a job cancelled mid-write) never sees half a
// file. The file keeps the mode of the one it replaces, if any.
func WriteFileAtomic(path string, data []byte, mode fs.FileMode) error {
	return WriteAtomic(path, mode, func(w io.Writer) error {
		_, err := w.Write(data)
		return err
	})
}

// WriteAtomic is WriteFileAtomic for content produced as it is written,
// such as a workbook or a downloaded body. A write error leaves any
// existing file untouched.
func WriteAtomic(path string, mode fs.FileMode, write func(io.Writer) error) error {
	if info, err := os.Stat(path); err == nil {
		mode = info.Mode().Perm()
	}
	tmp, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".*.tmp")
	if err != nil {
		return err
	}
	done := false
	defer func() {
		if !done {
			tmp.Close()
			os.Remove(tmp.Name())
		}
	}()
	if err := write(tmp); err != nil {
		return err
	}
	if err := tmp.Chmod(mode); err != nil {
		return err
	}
	if err := tmp.Close(); err != nil {
		return err
	}
	done = true
	if err := os.Rename(tmp.Name(), path); err != nil {
		os.Remove(tmp.Name())
		return err
	}
	return nil
}

func checkEncoding(encoding string) error {
	switch encoding {
	case "", encodingText, encodingBase64:
		return nil
	}
	return step.Businessf("with.encoding: %q is not text or base64", encoding)
}

// statProblem turns a failed stat of the path the workflow named into the
// step error: a missing file is the data's fault, anything else the
// system's.
func statProblem(param, p string, err error) error {
	if errors.Is(err, fs.ErrNotExist) {
		return step.Businessf("with.%s: %s does not exist", param, p)
	}
	if errors.Is(err, syscall.ENOTDIR) {
		return step.Businessf("with.%s: %s does not exist: a parent of it is a file", param, p)
	}
	return step.Failf("with.%s: %w", param, err)
}

func mkdirProblem(param, p string, err error) error {
	if errors.Is(err, syscall.ENOTDIR) || errors.Is(err, fs.ErrExist) {
		return step.Businessf("with.%s: cannot create the directory for %s: a parent of it is a file", param, p)
	}
	return step.Failf("create the directory for %s: %w", p, err)
}
