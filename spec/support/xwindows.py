#!/usr/bin/env python3
"""Another X client for the specs: small top-level windows, and large
properties on windows.

    python3 xwindows.py windows COUNT
    python3 xwindows.py set WINDOW NAME TYPE BYTES [FIRST]

`windows` opens $DISPLAY (libX11 through ctypes: nothing to build),
creates and maps COUNT windows of 40x40 pixels, class "CluaSpec", named
"w1" to "wCOUNT", prints "ready PID" once the server has them (or exits,
silent, after 60 s without), then sleeps until killed, or 900 s at most,
so that it never outlives a spec that forgot it; the server destroys the
windows with the connection.

`set` sets the property NAME of window WINDOW (an id, 0x... or decimal;
any client may set any window's properties) and exits once the server has
it:

* TYPE "UTF8_STRING": BYTES bytes of the text "tag 1 a\\n" over and over
  (what an old clua.awesome place looked like);
* TYPE "CARDINAL": BYTES / 4 32-bit numbers, FIRST (default 0) then
  0x7f7f7f7f.

More than 4 MB is written in 4 MB pieces (PropModeAppend): one request
may not be longer than the server's limit (16 MB with BIG-REQUESTS).

    python3 xwindows.py grab [DELAY]

`grab` is a screen locker's first step and nothing else: after DELAY
seconds (default 0) it grabs the keyboard on the root window, trying
again every 10 ms while another client holds it (as lockers do), for 10 s
at most (then "error: ..." and exit 1), prints "grabbed PID" and sleeps
until killed, or 900 s at most.
"""
import ctypes
import os
import signal
import sys
import time

X = ctypes.cdll.LoadLibrary("libX11.so.6")
X.XOpenDisplay.restype = ctypes.c_void_p
X.XOpenDisplay.argtypes = [ctypes.c_char_p]
X.XDefaultRootWindow.restype = ctypes.c_ulong
X.XDefaultRootWindow.argtypes = [ctypes.c_void_p]
X.XCreateSimpleWindow.restype = ctypes.c_ulong
X.XCreateSimpleWindow.argtypes = [ctypes.c_void_p, ctypes.c_ulong, ctypes.c_int,
                                  ctypes.c_int, ctypes.c_uint, ctypes.c_uint,
                                  ctypes.c_uint, ctypes.c_ulong, ctypes.c_ulong]
X.XInternAtom.restype = ctypes.c_ulong
X.XInternAtom.argtypes = [ctypes.c_void_p, ctypes.c_char_p, ctypes.c_int]
X.XChangeProperty.argtypes = [ctypes.c_void_p, ctypes.c_ulong, ctypes.c_ulong,
                              ctypes.c_ulong, ctypes.c_int, ctypes.c_int,
                              ctypes.c_void_p, ctypes.c_int]
X.XStoreName.argtypes = [ctypes.c_void_p, ctypes.c_ulong, ctypes.c_char_p]
X.XMapWindow.argtypes = [ctypes.c_void_p, ctypes.c_ulong]
X.XSync.argtypes = [ctypes.c_void_p, ctypes.c_int]
X.XFlush.argtypes = [ctypes.c_void_p]
X.XGrabKeyboard.argtypes = [ctypes.c_void_p, ctypes.c_ulong, ctypes.c_int, ctypes.c_int,
                            ctypes.c_int, ctypes.c_ulong]


class XClassHint(ctypes.Structure):
    _fields_ = [("res_name", ctypes.c_char_p), ("res_class", ctypes.c_char_p)]


X.XSetClassHint.argtypes = [ctypes.c_void_p, ctypes.c_ulong, ctypes.POINTER(XClassHint)]

REPLACE, APPEND = 0, 2
PIECE = 4 * 1024 * 1024


def set_big_property(dpy, window, name, type_name, size, first):
    atom = X.XInternAtom(dpy, name.encode(), 0)
    type_atom = X.XInternAtom(dpy, type_name.encode(), 0)
    mode = REPLACE
    done = 0
    while done < size or mode == REPLACE:
        piece = min(PIECE, size - done)
        if type_name == "CARDINAL":
            # Xlib takes format-32 data as C longs.
            items = piece // 4
            data = (ctypes.c_long * max(items, 1))(*([0x7f7f7f7f] * items))
            if done == 0 and items > 0:
                data[0] = first
            X.XChangeProperty(dpy, window, atom, type_atom, 32, mode, data, items)
        else:
            text = (b"tag 1 a\n" * (piece // 8 + 1))[:piece]
            X.XChangeProperty(dpy, window, atom, type_atom, 8, mode, text, piece)
        X.XFlush(dpy)
        mode = APPEND
        done += piece


def open_display():
    dpy = X.XOpenDisplay(None)
    if not dpy:
        print("error: cannot open the display", flush=True)
        sys.exit(1)
    return dpy


def windows(count):
    signal.alarm(60)
    dpy = open_display()
    root = X.XDefaultRootWindow(dpy)
    hint = XClassHint(b"cluaspec", b"CluaSpec")
    for i in range(count):
        w = X.XCreateSimpleWindow(dpy, root, (i * 7) % 600, (i * 5) % 400, 40, 40, 0, 0, 0)
        X.XStoreName(dpy, w, ("w%d" % (i + 1)).encode())
        X.XSetClassHint(dpy, w, ctypes.byref(hint))
        X.XMapWindow(dpy, w)
    X.XSync(dpy, 0)
    signal.alarm(0)
    print("ready %d" % os.getpid(), flush=True)
    time.sleep(900)


GRAB_SUCCESS, GRAB_MODE_ASYNC, CURRENT_TIME = 0, 1, 0


def grab(delay):
    time.sleep(delay)
    dpy = open_display()
    root = X.XDefaultRootWindow(dpy)
    deadline = time.monotonic() + 10
    while X.XGrabKeyboard(dpy, root, 0, GRAB_MODE_ASYNC, GRAB_MODE_ASYNC,
                          CURRENT_TIME) != GRAB_SUCCESS:
        if time.monotonic() > deadline:
            print("error: the keyboard stayed grabbed by another client for 10 s", flush=True)
            sys.exit(1)
        time.sleep(0.01)
    X.XSync(dpy, 0)
    print("grabbed %d" % os.getpid(), flush=True)
    time.sleep(900)


def main(argv):
    if len(argv) == 3 and argv[1] == "windows":
        windows(int(argv[2]))
    elif len(argv) in (2, 3) and argv[1] == "grab":
        grab(float(argv[2]) if len(argv) == 3 else 0)
    elif len(argv) in (6, 7) and argv[1] == "set":
        dpy = open_display()
        set_big_property(dpy, int(argv[2], 0), argv[3], argv[4], int(argv[5]),
                         int(argv[6], 0) if len(argv) == 7 else 0)
        X.XSync(dpy, 0)
    else:
        print(__doc__, file=sys.stderr)
        return 2
    return 0


if __name__ == "__main__":
    sys.exit(main(sys.argv))
