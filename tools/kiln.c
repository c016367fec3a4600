#include <stdio.h>
int main(void){puts("kiln placeholder");return 0;}
