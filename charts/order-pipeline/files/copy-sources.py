import os
import shutil
import sys

source, target = sys.argv[1:]
for name in os.listdir(source):
    origin, copy = os.path.join(source, name), os.path.join(target, name)
    if os.path.isdir(origin):
        shutil.copytree(origin, copy, dirs_exist_ok=True)
    else:
        shutil.copy2(origin, copy)
