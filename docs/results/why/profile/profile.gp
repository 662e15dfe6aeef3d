# b3 profile: forward + backward ms per image, by layer | cpu (Intel(R) Xeon(R) Processor, 2 threads), f32, nhwc
# Made by b3. Render with:  gnuplot profile.gp  (in this folder)
if (strstrt(GPVAL_TERMINALS, 'pngcairo') > 0) {
  set terminal pngcairo size 1100,650 font 'sans,10' noenhanced
} else {
  set terminal png size 1100,650 noenhanced
}
set output 'profile.png'
set title "b3 profile: forward + backward ms per image, by layer | cpu (Intel(R) Xeon(R) Processor, 2 threads), f32, nhwc\nmedian over 5 profiled steps per batch size; 32x32 synthetic images" noenhanced
set xlabel 'top-level block' noenhanced
set ylabel 'ms per image (forward + backward)' noenhanced
set grid
set yrange [0:*]
set key outside right top noenhanced
set offsets graph 0.04, graph 0.04, 0, 0
set xtics ('features.0' 0, 'features.1' 1, 'features.2' 2, 'features.3' 3, 'features.4' 4, 'features.5' 5, 'features.6' 6, 'features.7' 7, 'features.8' 8, 'features.9' 9, 'features.10' 10, 'features.11' 11, 'features.12' 12, 'features.13' 13, 'features.14' 14, 'features.15' 15, 'features.16' 16, 'avgpool' 17, 'classifier.0' 18, 'classifier.1' 19, 'classifier.2' 20, 'classifier.3' 21, 'loss' 22) rotate by -45 noenhanced
set bmargin 7
plot \
  'profile.dat' index 0 using 1:2 with lines lc rgb '#1f77b4' notitle, \
  'profile.dat' index 0 using 1:2 with points pt 7 ps 1.3 lc rgb '#1f77b4' title 'batch 127', \
  'profile.dat' index 1 using 1:2 with lines lc rgb '#d62728' notitle, \
  'profile.dat' index 1 using 1:2 with points pt 9 ps 1.3 lc rgb '#d62728' title 'batch 128', \
  'profile.dat' index 2 using 1:2 with lines lc rgb '#2ca02c' notitle, \
  'profile.dat' index 2 using 1:2 with points pt 11 ps 1.3 lc rgb '#2ca02c' title 'batch 129', \
  'profile.dat' index 3 using 1:2 with lines lc rgb '#9467bd' notitle, \
  'profile.dat' index 3 using 1:2 with points pt 7 ps 1.3 lc rgb '#9467bd' title 'batch 511', \
  'profile.dat' index 4 using 1:2 with lines lc rgb '#ff7f0e' notitle, \
  'profile.dat' index 4 using 1:2 with points pt 9 ps 1.3 lc rgb '#ff7f0e' title 'batch 512', \
  'profile.dat' index 5 using 1:2 with lines lc rgb '#1f77b4' notitle, \
  'profile.dat' index 5 using 1:2 with points pt 11 ps 1.3 lc rgb '#1f77b4' title 'batch 513'
