"""Runs a MediastinalAI child process (segmentation CLI, ``mediastinal_ai.mrml.worker``) from a
Slicer module with progress, log lines and a Cancel that stops the whole process tree. Shared by
the MediastinalAI and MediastinalAIRadiomics modules."""

import logging
import os
import shutil

import qt
import slicer

from mediastinal_ai.mrml import process

try:
    from slicer.i18n import tr as _
except ImportError:  # Slicer without i18n support

    def _(text):
        return text


CANCELLED = "cancelled"


class PythonProcessRunner:
    """Runs ``PythonSlicer <args>`` in a ``qt.QProcess`` (list arguments, no shell).

    Lines ``MEDIASTINALAI_PROGRESS <fraction> <message>`` on stdout go to ``onProgress(fraction,
    message)``; other lines to ``onLog(line)``. ``onFinished(ok, message)`` is called once: ok is
    True for exit code 0; a cancelled run reports ``(False, "cancelled")``. Reusable for any
    MediastinalAI child command that prints progress lines (segment CLI, mediastinal_ai.mrml.worker).
    """

    def __init__(self, onProgress=None, onFinished=None, onLog=None):
        self.onProgress = onProgress
        self.onFinished = onFinished
        self.onLog = onLog
        self.process = None
        self._buffer = process.LineBuffer()
        self._cancelled = False
        self._lastLines = []
        self._done = True

    @staticmethod
    def pythonExecutable():
        """PythonSlicer (Slicer's Python with its environment), else this interpreter."""
        import sys

        found = shutil.which("PythonSlicer")
        if found:
            return found
        app = getattr(slicer, "app", None)  # none on slicer-core (tests, scripts)
        if app is not None:
            candidate = os.path.join(app.applicationDirPath(), "PythonSlicer" + (".exe" if os.name == "nt" else ""))
            if os.path.exists(candidate):
                return candidate
        return sys.executable

    def isRunning(self):
        """True from start() until onFinished has been called."""
        return not self._done

    def start(self, args, program=None):
        if self.isRunning():
            raise RuntimeError(_("a background job is already running"))
        self._buffer = process.LineBuffer()
        self._cancelled = False
        self._done = False
        self._lastLines = []
        self.process = qt.QProcess()
        self.process.setProcessChannelMode(qt.QProcess.MergedChannels)
        environment = qt.QProcessEnvironment()
        for key, value in process.child_environment().items():
            environment.insert(key, value)
        self.process.setProcessEnvironment(environment)
        self.process.connect("readyReadStandardOutput()", self._onReadyRead)
        self.process.connect("finished(int,QProcess::ExitStatus)", self._onFinished)
        self.process.connect("errorOccurred(QProcess::ProcessError)", self._onError)
        program = program or self.pythonExecutable()
        logging.info("MediastinalAI: starting %s %s", program, " ".join(args))
        self.process.start(program, list(args))

    def cancel(self):
        """Kill the child and everything it started. ``PythonSlicer`` is a launcher whose child is
        the real Python: ``QProcess.kill`` alone would stop only the launcher."""
        if self.process is None or self._done:
            return
        self._cancelled = True
        pid = self.process.processId() if hasattr(self.process, "processId") else 0
        if pid:
            process.kill_process_tree(int(pid))
        if self.process.state() != qt.QProcess.NotRunning:
            self.process.kill()

    def _onReadyRead(self):
        raw = self.process.readAllStandardOutput()
        data = raw.data() if hasattr(raw, "data") else bytes(raw)
        text = data.decode("utf-8", "replace") if isinstance(data, bytes) else str(data)
        for line in self._buffer.feed(text):
            self._handleLine(line)

    def _handleLine(self, line):
        parsed = process.parse_progress_line(line)
        if parsed is not None:
            if self.onProgress:
                self.onProgress(*parsed)
            return
        if line.strip():
            self._lastLines = (self._lastLines + [line])[-20:]
            if self.onLog:
                self.onLog(line)

    def _finish(self, ok, message):
        if self._done:
            return
        self._done = True
        if self.onFinished:
            self.onFinished(ok, message)

    def _onFinished(self, exitCode, exitStatus):
        for line in self._buffer.flush():
            self._handleLine(line)
        if self._cancelled:
            self._finish(False, CANCELLED)
        elif exitStatus == qt.QProcess.NormalExit and exitCode == 0:
            self._finish(True, "")
        else:
            detail = "\n".join(self._lastLines[-5:]) or f"exit code {exitCode}"
            self._finish(False, detail)

    def _onError(self, error):
        if error == qt.QProcess.FailedToStart:
            self._finish(False, _("could not start {program}").format(program=self.process.program()))
