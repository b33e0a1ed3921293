"""Load the pickles inside datasets without running anything they name: CALVIN's `.npy` dicts, Bridge's `.pkl`.

CALVIN keeps `auto_lang_ann.npy` and `scene_info.npy` as 0-d numpy object arrays (a pickled dict inside a
`.npy`); BridgeData v2 keeps `obs_dict.pkl` and `policy_out.pkl` as plain pickles. `pickle.load` and
`np.load(allow_pickle=True)` import and call whatever a file names, so a crafted file in a downloaded
dataset runs code (`posix.system`, `builtins.exec`, ...). `SafeUnpickler` admits only what these files hold:

* builtin containers and scalars: dict, list, tuple, str, bytes, int, float, bool and None are pickle
  opcodes that import nothing; `set`, `frozenset` and `complex` by name (pickle writes them as calls in
  some protocols), and for bytes under protocols 0-2, `_codecs.encode(str, "latin1")` and `bytes()`;
* numpy arrays and scalars of plain dtypes (bool, integer, float, complex, bytes, str, object), built by
  the functions numpy's own pickles name: `_reconstruct` and `scalar` (module `numpy.core.multiarray` in
  numpy 1.x, `numpy._core.multiarray` in 2.x), `_frombuffer` (protocol 5), `numpy.dtype`, `numpy.ndarray`.

Any other global stops the load with `UnsafePickleError` before it is imported, so nothing in the file
runs. The numpy names are guarded as well, since numpy's own constructors corrupt memory when fed crafted
arguments (a dtype state whose field offset lies past its size; `ndarray(shape, object, buffer=bytes)`):
only the functions above may be called, with checked arguments; the state update (`BUILD`, i.e.
`__setstate__`) is allowed once, on an array or dtype the same file just created and nothing has used yet;
and every dtype must be its own canonical form (`np.dtype(dtype.str)`: no fields, subarrays or odd sizes).
The pure-Python `pickle._Unpickler` is the base class because the C unpickler cannot guard calls and
`BUILD`, only global look-ups.

    obs = load_pickle(Path("raw/traj_group0/traj0/obs_dict.pkl"))
    ann = load_npy(Path("training/lang_annotations/auto_lang_ann.npy")).item()
"""

from __future__ import annotations

import _compat_pickle
import pickle
from pathlib import Path
from typing import Any, BinaryIO

import numpy as np
from numpy.lib import format as npy_format

# numpy's own pickle helpers, taken from what numpy emits, so numpy 1.x and 2.x both resolve
_RECONSTRUCT = np.empty(0).__reduce__()[0]
_SCALAR = np.float64(0).__reduce__()[0]
_FROMBUFFER = np.empty(1).__reduce_ex__(5)[0]
# dtype kinds a dataset pickle may hold: bool, signed/unsigned int, float, complex, bytes, str, object
PLAIN_KINDS = frozenset("biufcSUO")
_NUMPY_MODULES = ("numpy.core.multiarray", "numpy._core.multiarray", "numpy.core._multiarray_umath",
                  "numpy._core._multiarray_umath")
# opcodes that create instances of a class (INST, OBJ, NEWOBJ, NEWOBJ_EX) or read the process-wide
# copyreg extension cache (EXT*, which bypasses find_class); plain data needs none of them
_REFUSED_OPCODES = {pickle.INST: "INST", pickle.OBJ: "OBJ", pickle.NEWOBJ: "NEWOBJ", pickle.NEWOBJ_EX: "NEWOBJ_EX",
                    pickle.EXT1: "EXT1", pickle.EXT2: "EXT2", pickle.EXT4: "EXT4"}


class UnsafePickleError(pickle.UnpicklingError):
    """A pickle names something outside the allow-list; raised before it was imported or called."""

    def __init__(self, source: str, refused: str, detail: str = "") -> None:
        # the message without the file name, for reports that name the file in a column of their own
        self.reason = (f"refused {refused}{detail}; a dataset pickle may hold only numpy arrays of plain dtypes "
                       "and builtin containers, and nothing in this file was executed")
        super().__init__(f"{source}: {self.reason}")
        self.source, self.refused = source, refused


def _refuser(opname: str) -> Any:
    """The dispatch entry of a refused opcode."""
    def refuse(unpickler: SafeUnpickler) -> None:
        raise UnsafePickleError(unpickler.source, f"opcode {opname}", " (it creates class instances or reads "
                                "the process-wide copyreg extension cache)")

    return refuse


def _empty_bytes() -> bytes:
    """`bytes()`, how protocols 0-2 write b"" (no size argument: `bytes(10**12)` would allocate a terabyte)."""
    return b""


def _name(obj: Any) -> str:
    """`module.qualname` of a callable, for messages."""
    return f"{getattr(obj, '__module__', '?')}.{getattr(obj, '__qualname__', type(obj).__qualname__)}"


class SafeUnpickler(pickle._Unpickler):
    """An unpickler that admits only numpy arrays of plain dtypes and builtin containers (module docstring).

    Args:
        file: binary file positioned at the pickle.
        source: the file's name for error messages.
    """

    dispatch = dict(pickle._Unpickler.dispatch)

    def __init__(self, file: BinaryIO, source: str) -> None:
        super().__init__(file)
        self.source = source
        # objects created by this load that may still receive one BUILD, by id (the value keeps the id alive)
        self._pending: dict[int, Any] = {}
        self._globals: dict[tuple[str, str], Any] = {
            **{(module, "_reconstruct"): self._reconstruct for module in _NUMPY_MODULES},
            **{(module, "scalar"): self._scalar for module in _NUMPY_MODULES},
            ("numpy.core.numeric", "_frombuffer"): self._frombuffer,
            ("numpy._core.numeric", "_frombuffer"): self._frombuffer,
            ("numpy", "dtype"): self._dtype,
            ("numpy", "ndarray"): np.ndarray,  # only as `_reconstruct`'s first argument: never called
            ("builtins", "set"): set, ("builtins", "frozenset"): frozenset, ("builtins", "complex"): complex,
            ("builtins", "bytes"): _empty_bytes, ("_codecs", "encode"): self._latin1_encode,
        }
        # what REDUCE may call; compared by identity, the objects find_class hands out
        self._callables = [obj for obj in self._globals.values() if obj is not np.ndarray]

    def find_class(self, module: str, name: str) -> Any:
        """The admitted object for `module.name`, under its Python 3 name as `pickle.load` maps it.

        Raises:
            UnsafePickleError: for every other global; it is neither imported nor called.
        """
        if self.proto < 3:  # protocols 0-2 name Python 2's modules (`__builtin__.set`, `commands.call`)
            if (module, name) in _compat_pickle.NAME_MAPPING:
                module, name = _compat_pickle.NAME_MAPPING[(module, name)]
            else:
                module = _compat_pickle.IMPORT_MAPPING.get(module, module)
        found = self._globals.get((module, name))
        if found is None:
            raise UnsafePickleError(self.source, f"global {module}.{name}")
        return found

    def _load_reduce(self) -> None:
        args = self.stack.pop()
        func = self.stack[-1]
        if not any(func is allowed for allowed in self._callables):
            raise UnsafePickleError(self.source, f"call of {_name(func)}")
        self.stack[-1] = func(*args)

    dispatch[pickle.REDUCE[0]] = _load_reduce

    def _load_build(self) -> None:
        state = self.stack.pop()
        inst = self.stack[-1]
        if self._pending.pop(id(inst), None) is not inst:
            kind = "numpy dtype" if isinstance(inst, np.dtype) else type(inst).__name__
            raise UnsafePickleError(self.source, f"state update (BUILD) of a {kind}",
                                    ": only a numpy array or dtype this file just created, and nothing used yet, "
                                    "may receive its state, once")
        if isinstance(inst, np.dtype):
            self._build_dtype(inst, state)
        else:
            self._build_array(inst, state)

    dispatch[pickle.BUILD[0]] = _load_build

    dispatch.update({opcode[0]: _refuser(opname) for opcode, opname in _REFUSED_OPCODES.items()})

    def _check_dtype(self, dtype: Any) -> np.dtype:
        """Raise unless `dtype` is a plain dtype equal in every respect to its canonical form."""
        canonical = None
        if isinstance(dtype, np.dtype) and dtype.names is None and dtype.subdtype is None:
            try:
                canonical = np.dtype(dtype.str)
            except TypeError:
                canonical = None
        plain = canonical is not None and type(dtype) is type(canonical) and dtype.kind in PLAIN_KINDS and all(
            getattr(dtype, a) == getattr(canonical, a) for a in ("str", "itemsize", "alignment", "flags"))
        if not plain or dtype.metadata is not None:
            raise UnsafePickleError(self.source, f"numpy dtype {dtype!r:.120}",
                                    " (only plain bool, number, bytes, str and object dtypes in canonical form)")
        return dtype

    def _use_dtype(self, dtype: Any) -> np.dtype:
        """Check a dtype that numpy is about to use; from now on it can no longer receive a BUILD."""
        self._pending.pop(id(dtype), None)
        return self._check_dtype(dtype)

    def _dtype(self, obj: Any, align: Any = False, copy: Any = True) -> np.dtype:
        if type(obj) is not str:
            raise UnsafePickleError(self.source, f"numpy dtype from a {type(obj).__name__}", " (only a type code)")
        # always a private copy: a BUILD on numpy's shared float64 instance would change it process-wide
        dtype = self._check_dtype(np.dtype(obj, align=bool(align), copy=True))
        self._pending[id(dtype)] = dtype
        return dtype

    def _build_dtype(self, dtype: np.dtype, state: Any) -> None:
        plain = type(state) is tuple and len(state) in (8, 9) and all(v is None for v in state[2:5] + state[8:])
        if not plain:
            raise UnsafePickleError(self.source, "numpy dtype state with fields, subarray or metadata")
        dtype.__setstate__(state)
        self._check_dtype(dtype)

    def _reconstruct(self, subtype: Any, shape: Any, typecode: Any) -> np.ndarray:
        # numpy always writes _reconstruct(ndarray, (0,), b"b") and sets the real contents with BUILD
        own = (subtype is np.ndarray and type(shape) is tuple and len(shape) == 1 and type(shape[0]) is int
               and shape[0] == 0 and type(typecode) in (bytes, str) and typecode in (b"b", "b"))
        if not own:
            raise UnsafePickleError(self.source, "numpy _reconstruct with arguments other than numpy's own "
                                    "(ndarray, (0,), b'b')")
        array = _RECONSTRUCT(np.ndarray, (0,), b"b")
        self._pending[id(array)] = array
        return array

    def _build_array(self, array: np.ndarray, state: Any) -> None:
        if type(state) is not tuple or len(state) not in (4, 5):
            raise pickle.UnpicklingError(f"{self.source}: malformed numpy array state")
        self._use_dtype(state[-3])  # (version,) shape, dtype, is_fortran, data
        array.__setstate__(state)

    def _latin1_encode(self, text: Any, encoding: Any = "utf-8") -> bytes:
        # how pickle protocols 0-2 write bytes: _codecs.encode(str, "latin1"); other codecs are refused
        if type(text) is not str or type(encoding) is not str or encoding not in ("latin1", "latin-1"):
            raise UnsafePickleError(self.source, f"call of _codecs.encode with encoding {encoding!r:.40}")
        return text.encode("latin-1")

    def _scalar(self, dtype: Any, *data: Any) -> Any:
        return _SCALAR(self._use_dtype(dtype), *data)

    def _frombuffer(self, buf: Any, dtype: Any, *shape_order: Any) -> np.ndarray:
        if type(buf) not in (bytes, bytearray):
            raise pickle.UnpicklingError(f"{self.source}: numpy _frombuffer needs in-band bytes")
        return _FROMBUFFER(buf, self._use_dtype(dtype), *shape_order)


def load_pickle(path: Path) -> Any:
    """What `pickle.load` would return for `path`, for files of numpy arrays and builtin containers.

    Raises:
        UnsafePickleError: the file names anything else; nothing in it was executed.
        pickle.UnpicklingError, EOFError, ValueError: a truncated or malformed pickle.
    """
    with path.open("rb") as f:
        return SafeUnpickler(f, str(path)).load()


def load_npy(path: Path) -> np.ndarray:
    """What `np.load(path, allow_pickle=True)` would return for a `.npy` file, without running its pickle.

    Arrays without objects are read by numpy with `allow_pickle=False`; an object array's payload (CALVIN's
    dicts, 0-d: use `.item()`) goes through `SafeUnpickler`.

    Raises:
        UnsafePickleError: the payload names anything but numpy arrays and builtin containers.
        ValueError: not a `.npy` file, or a pickled payload that is not an array.
    """
    headers = {(1, 0): npy_format.read_array_header_1_0, (2, 0): npy_format.read_array_header_2_0}
    with path.open("rb") as f:
        version = npy_format.read_magic(f)
        # format 3.0 (utf-8 field names) goes to numpy, which refuses rather than unpickles an object array
        if version not in headers or not headers[version](f)[2].hasobject:
            f.seek(0)
            return npy_format.read_array(f, allow_pickle=False)
        array = SafeUnpickler(f, str(path)).load()
    if not isinstance(array, np.ndarray):
        raise ValueError(f"{path}: the .npy header announces an object array but its payload is a "
                         f"{type(array).__name__}")
    return array
