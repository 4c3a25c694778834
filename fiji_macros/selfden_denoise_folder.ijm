// selfden_denoise_folder.ijm: denoise every image (.tif, .tiff, .png) in a folder with selfden.
//
// Interactive use: run the macro and pick the input folder, the output folder and the model.
// Choices are remembered between uses; selfden is found by itself (see selfden_denoise.ijm).
//
// Scripted use: a non-empty argument replaces the dialog, in the same two formats as
// selfden_denoise.ijm (an ImageJ option string with [bracketed] values, or one key=value per line):
//     runMacro("selfden_denoise_folder.ijm", "input=[/data/raw] output=[/data/denoised] model=[/models/m]");
// Keys: input (folder of images; required), output (folder for the results, created if missing,
// must differ from input), model (folder, rdf.yaml or .zip; required), samples, std, device,
// tile_size, selfden, tta (as in selfden_denoise.ijm), overwrite (true: redo images whose result exists).
//
// Each image is one `selfden infer` call (each argument passed separately), so one failing image
// is logged and the batch goes on. Results are IMAGE_denoised.tif in the output folder, with the
// metadata selfden carries over; selfden_batch_log.txt there records file, status, time and error.
// No temporary files: selfden writes each result under a temporary name and renames it when done.

var VERSION = "0.1.0";
var PREFS = "selfden.folder.";
var KNOWN_KEYS = newArray("input", "output", "model", "samples", "std", "device", "tile_size", "selfden", "overwrite", "tta");
var DEVICES = newArray("auto", "cpu", "cuda");
var IMAGE_SUFFIXES = newArray(".tif", ".tiff", ".png");
var LOG_NAME = "selfden_batch_log.txt";
var WORK_DIR = "";          // unused here (no temporary folder); cleanUp() is shared with the other macros
var PLAIN_HEADLESS = false; // unused here: no image is opened in ImageJ
var SELFDEN_PYTHON = "";   // the Python interpreter selfden runs on, "" if unknown (see pythonOf)
var LAST_ANSWER = "";      // what the last `CANDIDATE --version` printed (see selfdenVersion)
var CAN_ASK = false;       // interactive run with a display: may ask where selfden is

macro "selfden denoise folder" {
	main();
}

function main() {
	argument = scriptedArgument();
	scripted = lengthOf(String.trim(argument)) > 0;
	headless = "" + call("java.awt.GraphicsEnvironment.isHeadless");
	CAN_ASK = !scripted && headless != "true";
	if (scripted) {
		parseArguments(argument);
		settings = settingsFromArguments();
	} else {
		settings = settingsFromDialog();
	}
	setBatchMode(true);
	denoiseFolder(settings);
}

// ----------------------------------------------------------------------------- settings
// settings is an array: input, output, model, samples, std, device, tile_size, selfden, overwrite, tta.

function settingsFromArguments() {
	input = argumentValue("input", "");
	output = argumentValue("output", "");
	model = argumentValue("model", "");
	samples = parseCount(argumentValue("samples", "0"), "samples");
	std = parseFlag(argumentValue("std", "false"), "std");
	device = parseDevice(argumentValue("device", "auto"));
	tile = parseCount(argumentValue("tile_size", "0"), "tile_size");
	selfden = argumentValue("selfden", "");
	overwrite = parseFlag(argumentValue("overwrite", "false"), "overwrite");
	tta = parseFlag(argumentValue("tta", "false"), "tta");
	return newArray(input, output, model, samples, std, device, tile, selfden, overwrite, tta);
}

function settingsFromDialog() {
	Dialog.create("selfden denoise folder " + VERSION);
	Dialog.addDirectory("Input folder (.tif, .tiff, .png)", call("ij.Prefs.get", PREFS + "input", ""));
	Dialog.addDirectory("Output folder", call("ij.Prefs.get", PREFS + "output", ""));
	Dialog.addFile("Model (folder, its rdf.yaml, or .zip)", call("ij.Prefs.get", "selfden.model", ""));
	Dialog.addNumber("COSDD samples (0 = direct denoiser)", 0);
	Dialog.addCheckbox("Uncertainty map (std over the samples)", false);
	Dialog.addCheckbox("Average the flips/rotations it was trained with (tta; up to 8x the time)", false);
	Dialog.addChoice("Device", DEVICES, call("ij.Prefs.get", "selfden.device", "auto"));
	Dialog.addNumber("Tile size (0 = model's suggestion)", 0);
	Dialog.addFile("selfden executable (empty: find it)", "");
	Dialog.addCheckbox("Redo images whose result already exists", false);
	Dialog.addMessage("Help: fiji_macros/README.md in the selfden sources.");
	Dialog.show();
	input = Dialog.getString();
	output = Dialog.getString();
	model = modelFolder(Dialog.getString());
	samples = parseCount("" + Dialog.getNumber(), "samples");
	std = Dialog.getCheckbox();
	tta = Dialog.getCheckbox();
	device = Dialog.getChoice();
	tile = parseCount("" + Dialog.getNumber(), "tile size");
	selfden = Dialog.getString();
	overwrite = Dialog.getCheckbox();
	call("ij.Prefs.set", PREFS + "input", input);
	call("ij.Prefs.set", PREFS + "output", output);
	call("ij.Prefs.set", "selfden.model", model);
	call("ij.Prefs.set", "selfden.device", device);
	return newArray(input, output, model, samples, std, device, tile, selfden, overwrite, tta);
}

// ----------------------------------------------------------------------------- the batch
function denoiseFolder(settings) {
	input = withSeparator(settings[0]);
	output = withSeparator(settings[1]);
	model = modelFolder(settings[2]);
	selfden = String.trim(settings[7]);
	selfden = findSelfden(selfden, CAN_ASK);
	checkFolders(input, output);
	if (model == "") fail("no model given: pass model=[/path/to/model folder or .zip].");
	images = imageFiles(input);
	if (images.length == 0) fail("no .tif, .tiff or .png images in " + input);
	logPath = output + LOG_NAME;
	logFile = File.open(logPath);
	print(logFile, "# selfden batch " + timestamp() + ", macro " + VERSION);
	print(logFile, "# input: " + input);
	print(logFile, "# output: " + output);
	print(logFile, "# command: " + commandLine(selfden, inferArguments(model, "IMAGE", "RESULT", settings, settings[8])));
	print(logFile, "time\tfile\tstatus\tseconds\tmessage");
	counts = newArray(0, 0, 0);
	for (i = 0; i < images.length; i++) {
		showProgress(i, images.length);
		status = denoiseOne(input, output + resultName(images[i], images), images[i], model, selfden, settings);
		print(logFile, timestamp() + "\t" + images[i] + "\t" + status);
		parts = split(status, "\t");
		print("[selfden] " + (i + 1) + "/" + images.length + " " + images[i] + ": " + String.join(parts, " "));
		if (startsWith(status, "ok")) counts[0]++;
		else if (startsWith(status, "failed")) counts[1]++;
		else counts[2]++;
	}
	File.close(logFile);
	summary = "" + images.length + " images: " + counts[0] + " denoised, " + counts[1] + " failed, " + counts[2] + " skipped. Log: " + logPath;
	print("[selfden] " + summary);
	if (counts[1] > 0 && !is("Batch Mode")) showMessage("selfden denoise folder", summary);
}

// One image: returns "ok\tSECONDS\t", "failed\tSECONDS\tERROR" or "skipped\t0\tREASON".
function denoiseOne(input, result, name, model, selfden, settings) {
	existed = File.exists(result);
	if (existed && !settings[8]) return "skipped\t0\t" + File.getName(result) + " exists (overwrite=true redoes it)";
	before = "";
	if (existed) before = File.lastModified(result);
	start = getTime();
	transcript = runSelfden(selfden, inferArguments(model, input + name, result, settings, existed));
	seconds = d2s((getTime() - start) / 1000, 1);
	// A failed redo leaves the earlier result in place: only a new file counts as done.
	if (File.exists(result) && (!existed || File.lastModified(result) != before)) return "ok\t" + seconds + "\t";
	return "failed\t" + seconds + "\t" + replace(failureMessage(transcript, selfden), "\n", " ");
}

// IMAGE_denoised.tif; IMAGE_png_denoised.tif when another image has the same name but suffix.
function resultName(name, images) {
	base = substring(name, 0, lastIndexOf(name, "."));
	for (k = 0; k < images.length; k++) {
		other = images[k];
		otherBase = substring(other, 0, lastIndexOf(other, "."));
		if (other != name && otherBase == base) return base + "_" + substring(name, lastIndexOf(name, ".") + 1) + "_denoised.tif";
	}
	return base + "_denoised.tif";
}

function imageFiles(folder) {
	files = getFileList(folder);
	images = newArray(0);
	for (i = 0; i < files.length; i++)
		if (isImageName(files[i])) images = Array.concat(images, files[i]);
	Array.sort(images);
	return images;
}

function isImageName(name) {
	lower = toLowerCase(name);
	if (startsWith(lower, ".")) return false;
	for (s = 0; s < IMAGE_SUFFIXES.length; s++)
		if (endsWith(lower, IMAGE_SUFFIXES[s])) return true;
	return false;
}

function checkFolders(input, output) {
	if (input == File.separator) fail("no input folder given: pass input=[/path/to/images].");
	if (!File.isDirectory(input)) fail("input folder not found: " + input);
	if (output == File.separator) fail("no output folder given: pass output=[/path/to/results].");
	same = lengthOf(input) == lengthOf(output) && indexOf(input, output) == 0;
	if (same) fail("the output folder is the input folder (" + input + "): choose another so results never mix with, or overwrite, the originals.");
	if (!File.isDirectory(output)) File.makeDirectory(output);
	if (!File.isDirectory(output)) fail("could not create the output folder " + output);
}

function withSeparator(folder) {
	folder = String.trim(folder);
	if (endsWith(folder, "/") || endsWith(folder, "\\")) return folder;
	return folder + File.separator;
}

function timestamp() {
	getDateAndTime(year, month, dayOfWeek, day, hour, minute, second, msec);
	return "" + year + "-" + IJ.pad(month + 1, 2) + "-" + IJ.pad(day, 2) + " " + IJ.pad(hour, 2) + ":" + IJ.pad(minute, 2) + ":" + IJ.pad(second, 2);
}

// The "shared:" sections below are the same in every selfden macro that has them (a test
// checks): edit them in selfden_denoise.ijm and copy them over.

// ----------------------------------------------------------------------------- shared: finding selfden
// The selfden executable, tried in this order: the one given (selfden=, or the dialog's field);
// the one remembered from the last run (see rememberedFile); every folder on
// the PATH; the usual install places (~/.local/bin for pip --user and pipx, $PIPX_BIN_DIR,
// conda/mamba bases and their envs/*, $CONDA_PREFIX, $VIRTUAL_ENV). A candidate counts only if
// `CANDIDATE --version` prints "selfden VERSION". The one found is remembered. When none is
// found, an interactive run asks for it; a scripted or headless run stops, saying what was tried.

// (In ImageJ 1.53 "return userFunction(...)" can fail after nested calls: results go through variables.)
function findSelfden(given, canAsk) {
	if (given != "") {
		found = checkedSelfden(given, "given");
		return found;
	}
	remembered = rememberedSelfden();
	if (remembered != "") {
		version = selfdenVersion(remembered);
		if (version != "") {
			found = useSelfden(remembered, version, "remembered from an earlier run");
			return found;
		}
		print("[selfden] the remembered " + remembered + " no longer works (" + LAST_ANSWER + "); looking for selfden again.");
	}
	onPath = pathCandidates();
	usual = usualCandidates();
	candidates = Array.concat(onPath, usual);
	seen = "\n";
	rejected = "";
	for (i = 0; i < candidates.length; i++) {
		candidate = candidates[i];
		isNew = indexOf(seen, "\n" + candidate + "\n") < 0;
		if (isNew) seen = seen + candidate + "\n";
		if (isNew && File.exists(candidate) && !File.isDirectory(candidate)) {
			version = selfdenVersion(candidate);
			if (version != "") {
				found = useSelfden(candidate, version, "found");
				return found;
			}
			rejected = rejected + "\n  " + candidate + " (its --version printed: " + LAST_ANSWER + ")";
		}
	}
	print("[selfden] looked for selfden at:\n  " + replace(String.trim(seen), "\n", "\n  "));
	text = notFoundText(remembered, rejected);
	if (!canAsk) fail(text);
	found = askForSelfden(text);
	return found;
}

function checkedSelfden(path, how) {
	version = selfdenVersion(path);
	if (version == "")
		fail("selfden=" + path + " is not a working selfden: `" + path + " --version` printed: " + LAST_ANSWER + ".\n" + howToGiveSelfden());
	found = useSelfden(path, version, how);
	return found;
}

// "selfden VERSION" when `candidate --version` prints it, else "" (LAST_ANSWER keeps what it printed).
function selfdenVersion(candidate) {
	answer = String.trim(exec(candidate, "--version"));
	first = answer;
	newline = indexOf(answer, "\n");
	if (newline >= 0) first = String.trim(substring(answer, 0, newline));
	LAST_ANSWER = first;
	if (first == "") LAST_ANSWER = "nothing";
	if (matches(first, "selfden [0-9][^ ]*")) return first;
	return "";
}

function useSelfden(path, version, how) {
	remembered = rememberedSelfden();
	if (remembered != path) rememberSelfden(path);
	print("[selfden] using " + path + " (" + version + ", " + how + ")");
	python = pythonOf(path, version);
	SELFDEN_PYTHON = python;
	if (SELFDEN_PYTHON == "") print("[selfden] no Python interpreter of this selfden found: selfden's error messages can only be seen in a terminal.");
	return path;
}

// The remembered executable lives in selfden_executable.txt in ImageJ's preferences folder
// (~/.imagej, or Fiji's): written at once, whereas ij.Prefs values are saved only when ImageJ quits
// normally (never in headless batch runs).
function rememberedFile() {
	folder = call("ij.Prefs.getPrefsDir");
	file = inFolder(folder, "selfden_executable.txt");
	return file;
}

// Before this file, the dialogs kept the path they were given in ImageJ's selfden.executable.
function rememberedSelfden() {
	file = rememberedFile();
	remembered = "";
	if (File.exists(file)) remembered = String.trim(File.openAsString(file));
	else remembered = call("ij.Prefs.get", "selfden.executable", "");
	return remembered;
}

function rememberSelfden(path) {
	folder = call("ij.Prefs.getPrefsDir");
	if (!File.isDirectory(folder)) File.makeDirectory(folder);
	file = rememberedFile();
	File.saveString(path, file);
	if (!File.exists(file)) print("[selfden] could not remember " + path + " in " + file);
}

function askForSelfden(text) {
	Dialog.create("Where is selfden?");
	Dialog.addMessage(text);
	Dialog.addFile("selfden executable", "");
	Dialog.show();
	path = String.trim(Dialog.getString());
	if (path == "") fail("no selfden executable given.\n" + howToGiveSelfden());
	found = checkedSelfden(path, "chosen");
	return found;
}

function notFoundText(remembered, rejected) {
	text = "selfden was not found. Tried, in order:";
	if (remembered != "") text = text + "\n- the selfden remembered from an earlier run: " + remembered;
	text = text + "\n- " + selfdenName() + " in every folder on the PATH";
	text = text + "\n- ~/.local/bin (pip --user, pipx), $PIPX_BIN_DIR, $CONDA_PREFIX, $VIRTUAL_ENV";
	text = text + "\n- conda/mamba: ~/miniconda3, ~/anaconda3, ~/miniforge3, ~/mambaforge, ~/micromamba, ~/.conda and their envs/*";
	if (rejected != "") text = text + "\nThese answered --version with something else:" + rejected;
	return text + "\n(the Log lists every path tried)\n" + howToGiveSelfden();
}

function howToGiveSelfden() {
	return "Give the selfden of your environment once: selfden=[/full/path/to/selfden] when scripted, or the dialog's "
		+ "\"selfden executable\" field. In a terminal where selfden works, `which selfden` (Windows: `where selfden`) "
		+ "prints that path. It is remembered for later runs.";
}

function isWindows() {
	return startsWith(getInfo("os.name"), "Windows");
}

function selfdenName() {
	if (isWindows()) return "selfden.exe";
	return "selfden";
}

function environmentVariable(name) {
	value = "" + call("java.lang.System.getenv", name);
	if (value == "null") return "";
	return String.trim(value);
}

function inFolder(folder, name) {
	if (endsWith(folder, "/") || endsWith(folder, "\\")) return folder + name;
	return folder + File.separator + name;
}

// selfden in a folder; on Windows also in its Scripts\ (a Python or conda environment's root).
function binCandidates(folder) {
	// (newArray() and Array.concat() take a user function's result for a number: assign it first.)
	if (!isWindows()) {
		only = inFolder(folder, "selfden");
		return newArray(only);
	}
	direct = inFolder(folder, "selfden.exe");
	scripts = inFolder(folder, "Scripts");
	inScripts = inFolder(scripts, "selfden.exe");
	return newArray(direct, inScripts);
}

// The folder of an environment's scripts: bin/ (Linux, macOS) or Scripts\ (Windows).
function environmentBin(environment) {
	name = "bin";
	if (isWindows()) name = "Scripts";
	folder = inFolder(environment, name);
	return folder;
}

function pathCandidates() {
	paths = newArray(0);
	folders = split(environmentVariable("PATH"), getInfo("path.separator"));
	for (i = 0; i < folders.length; i++) {
		folder = String.trim(replace(folders[i], "\"", ""));
		if (folder != "") {
			found = binCandidates(folder);
			paths = Array.concat(paths, found);
		}
	}
	return paths;
}

function usualCandidates() {
	home = getDirectory("home");
	local = inFolder(home, ".local" + File.separator + "bin");
	folders = newArray(local);
	variables = newArray("PIPX_BIN_DIR", "CONDA_PREFIX", "VIRTUAL_ENV");
	for (i = 0; i < variables.length; i++) {
		value = environmentVariable(variables[i]);
		if (value != "" && i == 0) folders = Array.concat(folders, value);
		if (value != "" && i > 0) {
			bin = environmentBin(value);
			folders = Array.concat(folders, bin);
		}
	}
	mamba = ".local" + File.separator + "share" + File.separator + "mamba";
	bases = newArray("miniconda3", "anaconda3", "miniforge3", "mambaforge", "micromamba", ".conda", mamba);
	for (b = 0; b < bases.length; b++) {
		conda = condaFolders(inFolder(home, bases[b]));
		folders = Array.concat(folders, conda);
	}
	if (isWindows()) {
		for (b = 0; b < 4; b++) {
			conda = condaFolders("C:\\ProgramData\\" + bases[b]);
			folders = Array.concat(folders, conda);
		}
		user = subfolders(inFolder(environmentVariable("APPDATA"), "Python"), "Scripts");
		folders = Array.concat(folders, user);
	}
	if (startsWith(getInfo("os.name"), "Mac")) {
		user = subfolders(home + "Library/Python", "bin");
		folders = Array.concat(folders, user);
		folders = Array.concat(folders, "/opt/homebrew/bin");
	}
	paths = newArray(0);
	name = selfdenName();
	for (i = 0; i < folders.length; i++) {
		path = inFolder(folders[i], name);
		paths = Array.concat(paths, path);
	}
	return paths;
}

// A conda/mamba installation's own scripts folder and those of its envs/*.
function condaFolders(base) {
	if (!File.isDirectory(base)) return newArray(0);
	bin = environmentBin(base);
	folders = newArray(bin);
	environments = inFolder(base, "envs");
	if (!File.isDirectory(environments)) return folders;
	names = getFileList(environments);
	for (i = 0; i < names.length; i++) {
		if (endsWith(names[i], "/")) {
			bin = environmentBin(inFolder(environments, substring(names[i], 0, lengthOf(names[i]) - 1)));
			folders = Array.concat(folders, bin);
		}
	}
	return folders;
}

// SUB inside every subfolder of folder (e.g. %APPDATA%\Python\Python311\Scripts).
function subfolders(folder, sub) {
	found = newArray(0);
	if (!File.isDirectory(folder)) return found;
	names = getFileList(folder);
	for (i = 0; i < names.length; i++) {
		if (endsWith(names[i], "/")) {
			path = inFolder(inFolder(folder, substring(names[i], 0, lengthOf(names[i]) - 1)), sub);
			found = Array.concat(found, path);
		}
	}
	return found;
}

// ImageJ's exec() returns only a program's standard output, and selfden writes its errors on
// standard error. So selfden runs through its own Python interpreter with this constant program,
// which points standard error at standard output (on every OS, no shell) and then runs
// `python -m selfden` with the same arguments.
function pythonProgram() {
	return "import sys; sys.path = [p for p in sys.path if p not in ('', '.')]; import os, runpy; "
		+ "os.dup2(1, 2); sys.stdout.reconfigure(errors='backslashreplace'); sys.stderr = sys.stdout; "
		+ "runpy.run_module('selfden', run_name='__main__', alter_sys=True)";
}

// The Python interpreter selfden runs on: from its script's first line (#!...), else next to it;
// accepted only if it runs the same selfden version. "" if none.
function pythonOf(selfden, version) {
	script = scriptFile(selfden);
	if (script == "") return "";
	candidates = newArray(0);
	shebang = shebangPython(script);
	if (shebang != "") candidates = Array.concat(candidates, shebang);
	folder = File.getParent(script);
	names = newArray("python3", "python");
	if (isWindows()) names = newArray("python.exe", ".." + File.separator + "python.exe");
	for (i = 0; i < names.length; i++) {
		path = inFolder(folder, names[i]);
		candidates = Array.concat(candidates, path);
	}
	program = pythonProgram();
	for (i = 0; i < candidates.length; i++) {
		if (File.exists(candidates[i])) {
			answer = String.trim(exec(candidates[i], "-c", program, "--version"));
			python = candidates[i]; // "return candidates[i]" fails in nested calls in ImageJ 1.53
			if (answer == version) return python;
		}
	}
	return "";
}

// The file behind an executable given with or without its folder ("" if not found).
function scriptFile(selfden) {
	if (indexOf(selfden, "/") >= 0 || indexOf(selfden, "\\") >= 0) return selfden;
	candidates = pathCandidates();
	for (i = 0; i < candidates.length; i++) {
		candidate = candidates[i];
		name = File.getName(candidate);
		if (name == selfden || name == selfden + ".exe") {
			if (File.exists(candidate)) return candidate;
		}
	}
	return "";
}

// The interpreter on a "#!" line: pip's scripts, pip's Windows launchers (.exe with the line
// inside) and the "#!/bin/sh" + '''exec' "PYTHON" form pip uses for long paths or spaces.
function shebangPython(script) {
	size = File.length(script); // a variable: File.length() in a comparison compares text
	if (File.isDirectory(script) || size > 2000000) return "";
	text = File.openAsString(script);
	start = indexOf(text, "#!");
	while (start >= 0) {
		end = lineEnd(text, start);
		line = String.trim(substring(text, start + 2, end));
		if (line == "/bin/sh") {
			from = indexOf(text, "'''exec' ", end);
			to = indexOf(text, " \"$0\"", from + 1);
			if (from >= 0 && to > from) line = substring(text, from + 9, to);
		}
		interpreter = firstWord(line);
		if (indexOf(toLowerCase(File.getName(interpreter)), "python") >= 0) return interpreter;
		start = indexOf(text, "#!", start + 2);
	}
	return "";
}

function lineEnd(text, start) {
	end = lengthOf(text);
	newline = indexOf(text, "\n", start);
	if (newline >= 0) end = newline;
	feed = indexOf(text, "\r", start);
	if (feed >= 0 && feed < end) end = feed;
	return end;
}

// The first word of a command line: a "quoted path" or everything up to the first space.
function firstWord(line) {
	line = String.trim(line);
	if (startsWith(line, "\"")) {
		closing = indexOf(line, "\"", 1);
		if (closing > 0) return substring(line, 1, closing);
	}
	space = indexOf(line, " ");
	if (space > 0) return substring(line, 0, space);
	return line;
}

// ----------------------------------------------------------------------------- shared: running selfden
// settings[3..6] are samples, std, device and tile size, settings[9] tta, in both selfden macros.
// overwrite: pass --overwrite (selfden infer refuses to replace an existing result without it).
function inferArguments(model, image, result, settings, overwrite) {
	args = newArray("infer", model, image, "-o", result, "--device", settings[5]);
	if (settings[6] > 0) args = Array.concat(args, newArray("--tile-size", "" + settings[6]));
	if (settings[3] > 0) args = Array.concat(args, newArray("--samples", "" + settings[3]));
	if (settings[4]) args = Array.concat(args, "--std");
	if (settings[9]) args = Array.concat(args, "--tta");
	if (overwrite) args = Array.concat(args, "--overwrite");
	return args;
}

// Runs selfden with each argument separate (no shell anywhere): through its Python interpreter
// when one was found, so that its error messages come back (see pythonProgram), else directly.
function runSelfden(selfden, args) {
	print("[selfden] " + commandLine(selfden, args));
	start = getTime();
	program = pythonProgram();
	if (SELFDEN_PYTHON != "") output = execArray(Array.concat(newArray(SELFDEN_PYTHON, "-c", program), args));
	else output = execArray(Array.concat(newArray(selfden), args));
	print("[selfden] finished in " + d2s((getTime() - start) / 1000, 1) + " s");
	return output;
}

function failureMessage(transcript, selfden) {
	line = errorLine(transcript);
	text = "selfden infer failed: " + line;
	if (line == "") text = "selfden infer failed without a message (run the command printed in the Log in a terminal to see why).";
	if (line == "" && SELFDEN_PYTHON == "")
		text = "selfden infer failed; its message could not be read here (no Python interpreter of " + selfden + " was found). Run the command printed in the Log in a terminal to see why.";
	if (indexOf(transcript, "Cannot run program") >= 0)
		text = text + "\nThe selfden executable could not be started; leave the selfden field empty to look for it again, or " + howToGiveSelfden();
	return text;
}

// The line starting with "error:" (selfden's one-line message), else the last non-empty line
// (only when selfden's error output was captured: without it the last line is not an error).
function errorLine(transcript) {
	lines = split(transcript, "\n");
	last = "";
	for (i = 0; i < lines.length; i++) {
		line = String.trim(lines[i]);
		if (startsWith(line, "error:")) return String.trim(substring(line, 6));
		if (line != "") last = line;
	}
	if (SELFDEN_PYTHON == "" && indexOf(transcript, "Cannot run program") < 0) return "";
	return last;
}

function commandLine(program, args) {
	text = quoteForDisplay(program);
	for (i = 0; i < args.length; i++) text = text + " " + quoteForDisplay(args[i]);
	return text;
}

function quoteForDisplay(text) {
	if (indexOf(text, " ") < 0 && indexOf(text, "'") < 0 && indexOf(text, "\"") < 0) return text;
	return "\"" + text + "\"";
}

// exec() takes its arguments one by one (no array form in ImageJ 1.53), hence the ladder.
function execArray(a) {
	n = a.length;
	if (n == 5) return exec(a[0], a[1], a[2], a[3], a[4]);
	if (n == 6) return exec(a[0], a[1], a[2], a[3], a[4], a[5]);
	if (n == 7) return exec(a[0], a[1], a[2], a[3], a[4], a[5], a[6]);
	if (n == 8) return exec(a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7]);
	if (n == 9) return exec(a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], a[8]);
	if (n == 10) return exec(a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], a[8], a[9]);
	if (n == 11) return exec(a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], a[8], a[9], a[10]);
	if (n == 12) return exec(a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], a[8], a[9], a[10], a[11]);
	if (n == 13) return exec(a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], a[8], a[9], a[10], a[11], a[12]);
	if (n == 14) return exec(a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], a[8], a[9], a[10], a[11], a[12], a[13]);
	if (n == 15) return exec(a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], a[8], a[9], a[10], a[11], a[12], a[13], a[14]);
	if (n == 16) return exec(a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], a[8], a[9], a[10], a[11], a[12], a[13], a[14], a[15]);
	if (n == 17) return exec(a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], a[8], a[9], a[10], a[11], a[12], a[13], a[14], a[15], a[16]);
	if (n == 18) return exec(a[0], a[1], a[2], a[3], a[4], a[5], a[6], a[7], a[8], a[9], a[10], a[11], a[12], a[13], a[14], a[15], a[16], a[17]);
	fail("internal error: " + n + " command arguments; please report this.");
}

// ----------------------------------------------------------------------------- shared: cleanup, errors
function cleanUp() {
	if (WORK_DIR == "") return;
	deleteTree(WORK_DIR);
	if (File.exists(WORK_DIR)) print("[selfden] could not remove the temporary folder " + WORK_DIR);
	WORK_DIR = "";
}

function deleteTree(dir) {
	files = getFileList(dir);
	for (i = 0; i < files.length; i++) {
		if (endsWith(files[i], "/")) deleteTree(dir + files[i]);
		else dummy = File.delete(dir + files[i]);
	}
	dummy = File.delete(dir);
}

// Removes the temporary folder, then stops with the message: a message box with a GUI, the Log
// (stdout when headless) otherwise.
function fail(message) {
	cleanUp();
	print("[selfden] " + message);
	exit(message);
}

// Plain ImageJ without a display (tests, servers) builds its menus on first use and fails; the
// failed attempt, caught inside call(), leaves an empty command table that lets open() work.
function prepareHeadless() {
	headless = "" + call("java.awt.GraphicsEnvironment.isHeadless");
	if (headless != "true") return false;
	commands = "" + call("ij.Menus.getCommands");
	if (commands != "null") return false;
	dummy = call("ij.IJ.run", "Collect Garbage");
	return true;
}

// ----------------------------------------------------------------------------- shared: argument parsing
function scriptedArgument() {
	argument = getArgument();
	if (argument != "") return argument;
	// Run as an installed command, run("selfden denoise", "model=[...]") passes its options here.
	options = "" + call("ij.Macro.getOptions");
	if (options == "null") return "";
	return options;
}

// A model picked in a file chooser is often the rdf.yaml inside the folder: use the folder.
function modelFolder(path) {
	path = String.trim(path);
	if (endsWith(path, "rdf.yaml") || endsWith(path, "rdf.yml")) return File.getParent(path);
	return path;
}

// Same parser in all selfden macros. Two formats: one key=value per line (when the argument has
// a newline), or an ImageJ option string: key=value, key=[value with spaces] (the value ends at
// a "]" followed by a space or the end) and bare keys meaning true. Values are kept in List.

function parseArguments(text) {
	List.clear();
	if (indexOf(text, "\n") >= 0) parseLines(text);
	else parseOptionString(text);
}

function parseLines(text) {
	lines = split(text, "\n");
	for (i = 0; i < lines.length; i++) {
		line = String.trim(lines[i]);
		if (line == "" || startsWith(line, "#")) continue;
		equals = indexOf(line, "=");
		if (equals < 0) storeArgument(line, "true");
		else storeArgument(substring(line, 0, equals), substring(line, equals + 1));
	}
}

// Scanning compares single characters held in variables: the macro language evaluates both
// sides of && and ||, and treats a user function's result in a comparison as a number.
function parseOptionString(text) {
	n = lengthOf(text);
	i = skipSpaces(text, 0);
	while (i < n) {
		start = i;
		i = scanWord(text, i, true);
		key = substring(text, start, i);
		value = "true";
		c = charAt(text, i);
		if (c == "=") {
			i++;
			c = charAt(text, i);
			if (c == "[") {
				end = closingBracket(text, i + 1);
				if (end < 0) fail("argument " + key + "=[... has no closing ]");
				value = substring(text, i + 1, end);
				i = end + 1;
			} else {
				start = i;
				i = scanWord(text, i, false);
				value = substring(text, start, i);
			}
		}
		storeArgument(key, value);
		i = skipSpaces(text, i);
	}
}

// Index of the first space (or "=" when stopAtEquals) at or after i; the length if none.
function scanWord(text, i, stopAtEquals) {
	n = lengthOf(text);
	while (i < n) {
		c = substring(text, i, i + 1);
		if (isSpace(c)) return i;
		if (stopAtEquals) {
			if (c == "=") return i;
		}
		i++;
	}
	return n;
}

// A value in brackets ends at the first "]" followed by a space or the end of the text.
function closingBracket(text, from) {
	n = lengthOf(text);
	for (j = from; j < n; j++) {
		c = substring(text, j, j + 1);
		next = charAt(text, j + 1);
		if (c == "]") {
			if (next == "") return j;
			if (isSpace(next)) return j;
		}
	}
	return -1;
}

function skipSpaces(text, i) {
	n = lengthOf(text);
	while (i < n) {
		c = substring(text, i, i + 1);
		if (!isSpace(c)) return i;
		i++;
	}
	return n;
}

function charAt(text, i) {
	if (i >= lengthOf(text)) return "";
	return substring(text, i, i + 1);
}

function isSpace(c) {
	if (c == " " || c == "\t" || c == "\r") return true;
	return false;
}

function storeArgument(key, value) {
	key = replace(toLowerCase(String.trim(key)), "-", "_");
	for (k = 0; k < KNOWN_KEYS.length; k++) {
		if (key == KNOWN_KEYS[k]) {
			List.set(key, String.trim(value));
			return;
		}
	}
	fail("unknown argument '" + key + "'; expected " + String.join(KNOWN_KEYS, ", "));
}

function argumentValue(key, fallback) {
	value = List.get(key);
	if (value == "") return fallback;
	return value;
}

function parseCount(text, name) {
	value = parseInt(String.trim(text));
	if (isNaN(value) || value < 0 || value != parseFloat(String.trim(text)))
		fail(name + " must be a whole number >= 0, got '" + text + "'");
	return value;
}

function parseFlag(text, name) {
	lower = toLowerCase(String.trim(text));
	if (lower == "true" || lower == "1" || lower == "yes" || lower == "on") return true;
	if (lower == "false" || lower == "0" || lower == "no" || lower == "off" || lower == "") return false;
	fail(name + " must be true or false, got '" + text + "'");
}

function parseDevice(text) {
	lower = toLowerCase(String.trim(text));
	for (d = 0; d < DEVICES.length; d++) {
		device = DEVICES[d];
		if (lower == device) return device;
	}
	fail("device must be auto, cpu or cuda, got '" + text + "'");
}
